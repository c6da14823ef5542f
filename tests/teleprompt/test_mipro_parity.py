"""MIPROv2: the same LM requests, in the same order (num_threads=1), the same trial scores and
the same compiled program as DSPy 3.4.1, on one LMServer answering by rule.

The server's rules: the proposer's prompts (dataset observations and summary, program and
module descriptions, proposed instructions) are answered with text derived from a hash of
the request, so every proposal is different and both libraries get the same text for the same
request. The task's answers depend on the number in the question, the instruction text and the
demos in the prompt (without demos, multiples of 3 are answered wrong), so candidates score
differently and the search finds a program better than the default one.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

import dspex
from dspex.testing import LMServer, RecordedRequest
from dspex.testing.answers import read_prompt, render_reply
from tests.teleprompt import _oracle
from tests.teleprompt._oracle import exact, trainset

dspy = pytest.importorskip("dspy")
pytest.importorskip("optuna")
pytestmark = pytest.mark.dspy

NUMBERS = [2, 9, 4, 7, 5, 15, 8, 11, 6, 13, 10, 3, 12, 17, 16, 19]
_PROPOSER_OUTPUTS = {
    "observations",
    "summary",
    "program_description",
    "module_description",
    "proposed_instruction",
}


def _digest(request: RecordedRequest) -> int:
    text = json.dumps(request.messages, sort_keys=True)
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


def reply(request: RecordedRequest) -> str:
    system = str(request.messages[0]["content"])
    spec = read_prompt(system, request.last_user_message)
    if spec is None:
        return _oracle.oracle(request)
    if _PROPOSER_OUTPUTS.intersection(spec.fields):
        d = _digest(request)
        values = {
            name: (
                f"Instruction: Solve variant {d % 97} carefully."
                if name == "proposed_instruction"
                else f"{name} note {d % 89}"
            )
            for name in spec.fields
        }
        return render_reply(spec, values)
    if "answer" not in spec.fields:
        return _oracle.oracle(request)
    n = _oracle._number(request.last_user_message)
    right = "even" if n % 2 == 0 else "odd"
    with_demos = len(request.messages) > 2
    good = (n * 7 + len(system)) % 5 != 0 and (with_demos or n % 3 != 0)
    values = {
        name: (right if good else "wrong") if name == "answer" else f"{name} {n}"
        for name in spec.fields
    }
    return render_reply(spec, values)


@pytest.fixture(scope="module")
def mipro_server() -> Iterator[LMServer]:
    with LMServer() as srv:
        yield srv


def _run(server: LMServer, lib: Any, make: Any, compile_kwargs: dict[str, Any]) -> Any:
    server.clear()
    server.add_rule(None, reply)
    lm = lib.LM("openai/test", api_base=server.url, api_key="k", cache=False, num_retries=0)
    with lib.context(lm=lm):
        optimizer = make(lib)
        data = trainset(lib, NUMBERS)
        return optimizer.compile(_oracle.two_step(lib), trainset=data, **compile_kwargs)


def _requests(server: LMServer) -> list[str]:
    return [json.dumps(r.json, sort_keys=True) for r in server.requests]


def _state(program: Any) -> Any:
    def predictor_state(p: Any) -> Any:
        return (
            p.signature.instructions,
            [sorted(dict(d).items()) for d in p.demos],
        )

    return [predictor_state(p) for p in program.predictors()]


def _summary(program: Any) -> Any:
    logs = {
        n: {k: v for k, v in log.items() if not k.endswith("_program")}
        for n, log in program.trial_logs.items()
    }
    return {
        "state": _state(program),
        "score": program.score,
        "trial_logs": logs,
        "candidates": [(c["score"], _state(c["program"])) for c in program.candidate_programs],
        "mb_candidates": [
            (c["score"], _state(c["program"])) for c in program.mb_candidate_programs
        ],
    }


def _first_difference(ours: list[str], theirs: list[str]) -> str:
    for i, (a, b) in enumerate(zip(ours, theirs, strict=False)):
        if a != b:
            return f"request {i} differs:\nDSPex: {a[:2000]}\nDSPy:  {b[:2000]}"
    return f"lengths differ: DSPex {len(ours)}, DSPy {len(theirs)}"


CASES = [
    pytest.param(
        lambda lib: lib.MIPROv2(metric=exact, auto="light", num_threads=1),
        {},
        id="light",
    ),
    pytest.param(
        lambda lib: lib.MIPROv2(
            metric=exact, auto=None, num_candidates=3, num_threads=1, max_bootstrapped_demos=2
        ),
        {"num_trials": 7, "minibatch_size": 4, "minibatch_full_eval_steps": 2},
        id="minibatch",
    ),
]


@pytest.mark.parametrize(("make", "compile_kwargs"), CASES)
def test_mipro_same_requests_scores_and_program(
    mipro_server: LMServer, make: Any, compile_kwargs: dict[str, Any]
) -> None:
    theirs = _run(mipro_server, dspy, make, compile_kwargs)
    dspy_requests = _requests(mipro_server)
    ours = _run(mipro_server, dspex, make, compile_kwargs)
    ours_requests = _requests(mipro_server)
    assert ours_requests == dspy_requests, _first_difference(ours_requests, dspy_requests)
    assert _summary(ours) == _summary(theirs)
    assert isinstance(ours, dspex.Module)
    # the search found something better than the default program, so the state compared is
    # a proposed instruction with bootstrapped demos, not the student as it came in
    assert ours.score > ours.candidate_programs[-1]["score"]
    assert any(p.demos for p in ours.predictors())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_trials": 6, "minibatch_size": 4, "minibatch_full_eval_steps": 3},
        {"num_trials": 11, "minibatch": False},
    ],
    ids=["minibatch", "full"],
)
def test_mipro_concurrent_same_requests_and_program(
    mipro_server: LMServer, kwargs: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """num_threads=4: bootstraps, proposals and the sampler's random startup trials run
    concurrently here (DSPy runs them in order), so the requests are compared as a multiset;
    the trials, their scores and the result must not change."""

    def make(lib: Any) -> Any:
        return lib.MIPROv2(
            metric=exact, auto=None, num_candidates=4, num_threads=4, max_bootstrapped_demos=3
        )

    theirs = _run(mipro_server, dspy, make, kwargs)
    dspy_requests = sorted(_requests(mipro_server))
    with caplog.at_level(logging.INFO, logger="dspex.teleprompt.mipro_search"):
        ours = _run(mipro_server, dspex, make, kwargs)
    assert sorted(_requests(mipro_server)) == dspy_requests
    assert _summary(ours) == _summary(theirs)
    ahead = 3 if kwargs.get("minibatch", True) else 9  # up to the first full eval / startup
    assert f"Scoring the first {ahead} trials at once" in caplog.text
