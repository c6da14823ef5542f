"""GEPA: the same LM requests (task LM and reflection LM, in order with num_threads=1), the same
candidates, lineage, val scores and best program as DSPy 3.4.1, on one LMServer answering by
rule. Both run the same ``gepa`` engine; ours drives it through the native adapter.

The task LM's answers depend on the instruction text (``(n + len(system prompt)) % 3``), so the
reflection LM's proposals (deterministic words drawn from a hash of its request) change the
scores and GEPA accepts, rejects and merges candidates.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

import dspex
from dspex.testing import LMServer, RecordedRequest
from dspex.testing.answers import answer_messages, read_prompt
from tests.teleprompt import _oracle
from tests.teleprompt._oracle import trainset

dspy = pytest.importorskip("dspy")
pytest.importorskip("gepa")
pytestmark = pytest.mark.dspy

TRAIN = [2, 9, 4, 7, 5, 15, 8, 11]
VAL = [3, 6, 10, 13, 14]


_NEUTRALIZED = re.compile(r"\[\[ \\+## (\w+) \\+## \]\]")


def unescaped(messages: Any) -> Any:
    """``messages`` with DSPex's neutralized field markers (``[[ \\## x \\## ]]``, escaped
    inside values) written back as DSPy sends them."""
    text = json.dumps(messages)
    return json.loads(_NEUTRALIZED.sub(r"[[ ## \1 ## ]]", text))


def reply(request: RecordedRequest, garbage: bool = False) -> str:
    system = str(request.messages[0]["content"])
    spec = read_prompt(system, request.last_user_message)
    if spec is not None and "new_instruction" in spec.fields:
        # Drawn from DSPy's bytes, so both runs get the same proposal (see the format test).
        return answer_messages(unescaped(request.messages))
    is_task = spec is not None and "answer" in spec.fields
    if garbage and is_task and _oracle._number(request.last_user_message) == 11:
        return "I will not use the format."  # no field parses: a FailedPrediction in the trace
    return _oracle.instruction_sensitive(request)


def feedback_metric(lib: Any) -> Any:
    def metric(
        gold: Any, pred: Any, trace: Any = None, pred_name: Any = None, pred_trace: Any = None
    ) -> Any:
        right = gold.answer == pred.answer
        note = "Correct." if right else f"Wrong: expected {gold.answer}, got {pred.answer}."
        return lib.Prediction(score=float(right), feedback=note)

    return metric


@pytest.fixture(scope="module")
def gepa_server() -> Iterator[LMServer]:
    with LMServer() as srv:
        yield srv


def _run(server: LMServer, lib: Any, **args: Any) -> Any:
    server.clear()
    garbage = bool(args.get("add_format_failure_as_feedback"))
    server.add_rule(None, lambda request: reply(request, garbage))
    lm = lib.LM("openai/task", api_base=server.url, api_key="k", cache=False, num_retries=0)
    reflection = lib.LM(
        "openai/reflect", api_base=server.url, api_key="k", cache=False, num_retries=0
    )
    args = {"num_threads": 1, **args}
    optimizer = lib.GEPA(
        metric=feedback_metric(lib), reflection_lm=reflection, track_stats=True, seed=3, **args
    )
    with lib.context(lm=lm):
        return optimizer.compile(
            _oracle.two_step(lib), trainset=trainset(lib, TRAIN), valset=trainset(lib, VAL)
        )


def _requests(server: LMServer) -> list[tuple[Any, Any, Any]]:
    return [
        (r.json["model"], r.json["messages"], r.json.get("temperature")) for r in server.requests
    ]


def _summary(program: Any) -> Any:
    result = program.detailed_results
    as_dict = result.to_dict()
    return (
        {name: p.signature.instructions for name, p in program.named_predictors()},
        as_dict["candidates"],
        result.parents,
        result.val_aggregate_scores,
        result.val_subscores,
        as_dict["per_val_instance_best_candidates"],
        result.discovery_eval_counts,
        result.total_metric_calls,
        result.num_full_val_evals,
        result.best_idx,
    )


@pytest.mark.parametrize(
    "args",
    [
        {"max_metric_calls": 110},
        {"max_metric_calls": 40, "add_format_failure_as_feedback": True},
        pytest.param(
            {"max_metric_calls": 120, "use_merge": False, "component_selector": "all"},
            marks=pytest.mark.slow,
        ),
        pytest.param({"max_metric_calls": 200, "num_threads": 4}, marks=pytest.mark.slow),
    ],
)
def test_gepa_same_requests_and_program(gepa_server: LMServer, args: dict[str, Any]) -> None:
    theirs = _run(gepa_server, dspy, **args)
    dspy_requests = _requests(gepa_server)
    ours = _run(gepa_server, dspex, **args)
    ours_requests = _requests(gepa_server)
    if args.get("add_format_failure_as_feedback"):
        # The one unavoidable difference: the parse-failure feedback quotes the ChatAdapter
        # prompt structure, whose ``[[ ## field ## ]]`` markers DSPex escapes inside input
        # values (``adapters.values.neutralize_markers``, its deliberate guard against forged
        # structure). It starts at the first reflection request carrying such feedback; every
        # request that differs is one of those, and they are equal once unescaped.
        assert len(ours_requests) == len(dspy_requests)
        pairs = zip(ours_requests, dspy_requests, strict=True)
        differing = [i for i, (a, b) in enumerate(pairs) if a != b]
        assert differing, "a parse failure must reach the reflection LM"
        first = differing[0]
        assert ours_requests[:first] == dspy_requests[:first]
        for i in differing:
            model, messages, _ = ours_requests[i]
            assert model == "reflect" and "Your output failed to parse" in json.dumps(messages)
        ours_requests = [(m, unescaped(msgs), t) for m, msgs, t in ours_requests]
    else:
        assert len(ours.detailed_results.candidates) > 1, "the run must accept new candidates"
        assert ours.detailed_results.best_idx != 0, "the best program must not be the seed"
    if args.get("num_threads", 1) > 1:
        # Examples of one evaluation run concurrently: the same requests, in another order.
        ours_requests.sort(key=json.dumps)
        dspy_requests.sort(key=json.dumps)
    assert ours_requests == dspy_requests
    assert _summary(ours) == _summary(theirs)
    assert json.dumps(ours.dump_state(), default=repr) == json.dumps(
        theirs.dump_state(), default=repr
    )


def test_gepa_resume_from_log_dir_continues_the_uninterrupted_run(
    gepa_server: LMServer, tmp_path: Any
) -> None:
    """A run stopped after 6 GEPA iterations and started again on the same ``log_dir`` goes on
    exactly as the uninterrupted run: DSPy's part before the stop request for request, then the
    rest of DSPy's uninterrupted run, and its final result. (DSPy 3.4.1's own resumed run
    differs from its uninterrupted one from the first request after the restart: it evaluates
    the seed candidate again and draws from a fresh generator; ours reads the seed's scores
    back and restores the engine's generator, sampler and merge schedule.)"""
    whole = _run(gepa_server, dspy, max_metric_calls=110)
    uninterrupted = _requests(gepa_server)
    log_dir = str(tmp_path / "ours")
    stop = {"gepa_kwargs": {"stop_callbacks": [lambda state: state.i >= 6]}}
    _run(gepa_server, dspex, max_metric_calls=110, log_dir=log_dir, **stop)
    first = _requests(gepa_server)
    program = _run(gepa_server, dspex, max_metric_calls=110, log_dir=log_dir)
    rest = _requests(gepa_server)
    assert first and rest, "both parts must call the LM"
    assert first == uninterrupted[: len(first)]
    assert rest == uninterrupted[len(first) :]
    assert _summary(program) == _summary(whole)
