"""COPRO: the same LM requests (in order with num_threads=1) and the same compiled program,
candidates and statistics as DSPy 3.4.1, on one LMServer answering by rule.

Where the request sequences differ, and why: COPRO asks for ``n = breadth`` proposals in one
call. DSPy 3.4.1's LM client sends that as ``n`` separate requests without ``n``; DSPex's LM
sends one request with ``n``. The comparison expands each DSPex request with ``n=k`` into
``k`` entries, and the server answers the i-th repeat of the same proposer prompt with choice
``i`` (what DSPex's single request gets as its i-th choice), so both sides see the same
proposals; a proposer prompt asked again later (the same scored attempts at a later depth)
gets the same proposals again on both sides (DSPy's ``k`` repeats count ``k`` requests,
DSPex's one request with ``n=k`` counts ``k`` too). Everything else is compared as sent.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

import dspex
from dspex.teleprompt import COPRO
from dspex.testing import LMServer, RecordedRequest
from dspex.testing.answers import answer_messages, read_prompt
from tests.teleprompt import _oracle
from tests.teleprompt._oracle import exact, request_log, trainset

dspy = pytest.importorskip("dspy")
pytestmark = pytest.mark.dspy

NUMBERS = [2, 9, 4, 7, 5, 15]


def instruction_sensitive(seen: dict[str, int], breadth: int) -> Any:
    """Answers depend on the instruction text, so candidates score differently; proposer
    prompts get choice ``i`` on their i-th repeat (see the module docstring)."""

    def reply(request: RecordedRequest) -> str:
        system = str(request.messages[0]["content"])
        spec = read_prompt(system, request.last_user_message)
        if spec is not None and "proposed_instruction" in spec.fields:
            key = json.dumps(request.messages)
            asked = seen.get(key, 0)
            seen[key] = asked + int(request.json.get("n") or 1)
            per_call = breadth if "`attempted_instructions`" in system else breadth - 1
            return answer_messages(request.messages, choice=asked % per_call)
        return _oracle.instruction_sensitive(request)

    return reply


@pytest.fixture(scope="module")
def copro_server() -> Iterator[LMServer]:
    with LMServer() as srv:
        yield srv


def _run(server: LMServer, lib: Any, optimizer: Any, eval_kwargs: dict[str, Any]) -> Any:
    server.clear()
    server.add_rule(None, instruction_sensitive({}, optimizer.breadth))
    lm = lib.LM("openai/test", api_base=server.url, api_key="k", cache=False, num_retries=0)
    with lib.context(lm=lm):
        return optimizer.compile(
            _oracle.two_step(lib), trainset=trainset(lib, NUMBERS), eval_kwargs=eval_kwargs
        )


def _summary(program: Any) -> Any:
    def sigs(p: Any) -> list[tuple[str, str]]:
        return [
            (
                pr.signature.instructions,
                list(pr.signature.fields.values())[-1].json_schema_extra["prefix"],
            )
            for pr in p.predictors()
        ]

    return (
        json.dumps(program.dump_state(), default=repr),
        program.total_calls,
        [
            (c["score"], c["instruction"], c["prefix"], c["depth"], sigs(c["program"]))
            for c in program.candidate_programs
        ],
        getattr(program, "results_best", None) and list(program.results_best.values()),
        getattr(program, "results_latest", None) and list(program.results_latest.values()),
    )


@pytest.mark.parametrize(
    ("args", "threads"),
    [
        ({"breadth": 3, "depth": 2}, 1),
        pytest.param({"breadth": 4, "depth": 3, "track_stats": True}, 1, marks=pytest.mark.slow),
        ({"breadth": 3, "depth": 2, "track_stats": True}, 4),
        # a budget (never reached): proposals wait for the end of each depth, as DSPy's
        ({"breadth": 3, "depth": 2, "max_lm_calls": 10_000}, 4),
    ],
)
def test_copro_same_requests_and_program(
    copro_server: LMServer, args: dict[str, Any], threads: int
) -> None:
    eval_kwargs = {"num_threads": threads, "display_progress": False}
    theirs = _run(copro_server, dspy, dspy.COPRO(metric=exact, **args), eval_kwargs)
    dspy_requests = request_log(copro_server)
    ours = _run(copro_server, dspex, COPRO(metric=exact, **args), eval_kwargs)
    ours_requests = [
        entry
        for request in copro_server.requests
        for entry in [(request.json["messages"], request.json.get("temperature"))]
        * int(request.json.get("n") or 1)
    ]
    if threads == 1:
        assert ours_requests == dspy_requests
    else:
        key = json.dumps
        assert sorted(map(key, ours_requests)) == sorted(map(key, dspy_requests))
    assert _summary(ours) == _summary(theirs)


def test_copro_rejects_breadth_one() -> None:
    with pytest.raises(ValueError, match="Breadth must be greater than 1"):
        COPRO(breadth=1)
