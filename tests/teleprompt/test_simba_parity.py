"""SIMBA: the same LM requests (in order with num_threads=1), the same compiled program,
candidate scores and trial logs as DSPy 3.4.1, on one LMServer answering by rule.

The rule (``reply``) makes scores depend on the whole prompt (its length, and whether an
instruction carries one of the proposer's rules) and on the temperature, so trajectories of
different programs and LM copies differ, buckets have gaps, and both strategies (a demo, a
rule from DSPy's ``OfferFeedback`` prompt) change the winner. Nothing had to be relaxed: the
request bodies are compared as sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import dspex
from dspex.errors import OptimizerError
from dspex.teleprompt import SIMBA
from dspex.testing import LMServer, RecordedRequest
from dspex.testing.answers import read_prompt, render_reply
from tests.teleprompt import _oracle
from tests.teleprompt._oracle import exact, request_log, trainset

dspy = pytest.importorskip("dspy")
pytest.importorskip("numpy")
pytestmark = pytest.mark.dspy

NUMBERS = [2, 9, 4, 7, 5, 15, 6, 8]
ARGS: dict[str, Any] = {"bsize": 4, "num_candidates": 3, "max_steps": 3, "max_demos": 2}
SEED = 3  # a seed whose winner carries both a demo and a rule


def reply(request: RecordedRequest, bad_advice: bool = False) -> str:
    system = str(request.messages[0]["content"])
    user = request.last_user_message
    spec = read_prompt(system, user)
    if spec is not None and "module_advice" in spec.fields:
        if bad_advice:  # not parseable by any adapter: the strategy fails (DSPy skips it)
            return "I have no advice."
        names = json.JSONDecoder().raw_decode(user.split("[[ ## module_names ## ]]\n", 1)[1])[0]
        digest = hashlib.sha256(user.encode()).hexdigest()[:6]
        advice = {name: f"Rule {digest} for {name}." for name in names}
        return render_reply(spec, {"discussion": f"discussion {digest}", "module_advice": advice})
    if spec is None or "answer" not in spec.fields:
        return _oracle.oracle(request)
    n = _oracle._number(user)
    hot = float((request.json or {}).get("temperature") or 0.0) >= 1.0
    size = sum(len(str(m["content"])) for m in request.messages)
    right = "even" if n % 2 == 0 else "odd"
    ok = "Rule" in system or (n + size + hot) % 3
    values = {
        name: (right if ok else "wrong") if name == "answer" else f"{name} {n}"
        for name in spec.fields
    }
    return render_reply(spec, values)


def two_step_async(lib: Any) -> Any:
    """``_oracle.two_step`` with an ``aforward`` too: DSPy calls ``forward``, DSPex awaits
    ``aforward`` (the program runs as a task, the metric in a worker thread)."""

    class TwoStepAsync(lib.Module):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.draft = lib.Predict("question, hint -> draft")
            self.answer = lib.ChainOfThought("question, draft -> answer")

        def forward(self, question: str) -> Any:
            draft = self.draft(question=question, hint="parity").draft
            return self.answer(question=question, draft=draft)

        async def aforward(self, question: str) -> Any:
            draft = (await self.draft.acall(question=question, hint="parity")).draft
            return await self.answer.acall(question=question, draft=draft)

    return TwoStepAsync()


def rich_metric(lib: Any) -> Any:
    """A metric returning a Prediction with extra fields (they reach the rule prompt)."""

    def metric(example: Any, prediction: Any) -> Any:
        ok = example.answer == prediction.answer
        return lib.Prediction(score=float(ok), feedback=f"expected {example.answer}")

    return metric


@pytest.fixture(scope="module")
def simba_server() -> Iterator[LMServer]:
    with LMServer() as srv:
        yield srv


def _lm(lib: Any, server: LMServer, model: str = "openai/test") -> Any:
    return lib.LM(model, api_base=server.url, api_key="k", cache=False, num_retries=0)


def _run_args(args: dict[str, Any]) -> tuple[dict[str, Any], int]:
    args = dict(args)
    return args, args.pop("seed", SEED)


def _summary(program: Any) -> Any:
    def state(p: Any) -> str:
        return json.dumps(p.dump_state(), default=repr)

    return (
        state(program),
        program.simba_idx,
        [
            (c["score"], c["program"].simba_idx, state(c["program"]))
            for c in program.candidate_programs
        ],
        program.trial_logs,
    )


def _compile(server: LMServer, lib: Any, cls: Any, args: dict[str, Any]) -> tuple[Any, Any]:
    args, seed = _run_args(args)
    server.clear()
    bad_advice = args.pop("bad_advice", False)
    server.add_rule(None, lambda request: reply(request, bad_advice))
    teacher = args.pop("teacher", False)
    metric = rich_metric(lib) if args.pop("rich", False) else exact
    build = two_step_async if args.pop("async_program", False) else _oracle.two_step
    with lib.context(lm=_lm(lib, server)):
        if teacher:
            args["teacher_settings"] = {"lm": _lm(lib, server, "openai/teacher")}
        optimizer = cls(metric=metric, **args)
        program = optimizer.compile(build(lib), trainset=trainset(lib, NUMBERS), seed=seed)
    return program, request_log(server)


@pytest.fixture(scope="module")
def dspy_main(simba_server: LMServer) -> tuple[Any, Any]:
    return _compile(simba_server, dspy, dspy.SIMBA, {**ARGS, "num_threads": 1})


def test_simba_same_requests_in_order_and_program(
    simba_server: LMServer, dspy_main: tuple[Any, Any]
) -> None:
    theirs, dspy_requests = dspy_main
    ours, our_requests = _compile(simba_server, dspex, SIMBA, {**ARGS, "num_threads": 1})
    assert our_requests == dspy_requests
    assert _summary(ours) == _summary(theirs)
    # the case exercises both strategies: the winner has a demo and a proposer rule
    answer = ours.answer.predict
    assert answer.demos and "Rule " in answer.signature.instructions
    assert any("module_advice" in str(messages) for messages, _ in our_requests)


@pytest.fixture(scope="module")
def dspy_async(simba_server: LMServer) -> tuple[Any, Any]:
    args = {**ARGS, "async_program": True, "num_threads": 1}
    return _compile(simba_server, dspy, dspy.SIMBA, args)


@pytest.mark.parametrize("threads", [1, 4])
def test_simba_async_program_same_requests(
    simba_server: LMServer, dspy_async: tuple[Any, Any], threads: int
) -> None:
    """A program with ``aforward``: DSPex awaits it (DSPy runs ``forward``); the same
    requests (in order with one thread) and the same result."""
    theirs, dspy_requests = dspy_async
    full = {**ARGS, "async_program": True, "num_threads": threads}
    ours, our_requests = _compile(simba_server, dspex, SIMBA, full)
    if threads == 1:
        assert our_requests == dspy_requests
    else:
        assert sorted(map(json.dumps, our_requests)) == sorted(map(json.dumps, dspy_requests))
    assert _summary(ours) == _summary(theirs)


def test_simba_compiled_programs_load_both_ways(
    simba_server: LMServer, dspy_main: tuple[Any, Any], tmp_path: Path
) -> None:
    """DSPy 3.4.1 loads the program SIMBA compiles natively (its rule and demos), and the
    native program loads DSPy's; the loaded programs' states match the originals."""
    theirs, _ = dspy_main
    ours, _ = _compile(simba_server, dspex, SIMBA, {**ARGS, "num_threads": 4})
    ours.save(tmp_path / "native.json")
    in_dspy = _oracle.two_step(dspy)
    in_dspy.load(str(tmp_path / "native.json"))
    theirs.save(str(tmp_path / "dspy.json"))
    in_dspex = _oracle.two_step(dspex).load(tmp_path / "dspy.json")

    def state(program: Any) -> str:
        return json.dumps(program.dump_state(), default=repr)

    assert state(in_dspy) == state(theirs) == state(in_dspex) == state(ours)
    assert "Rule " in in_dspy.answer.predict.signature.instructions


def test_simba_concurrent_same_requests_and_program(
    simba_server: LMServer, dspy_main: tuple[Any, Any]
) -> None:
    """Candidates are scored as soon as their strategy is done and every winner is scored
    on the trainset as it comes (3 steps, 4 candidates: the final selection scores all)."""
    theirs, dspy_requests = dspy_main
    ours, our_requests = _compile(simba_server, dspex, SIMBA, {**ARGS, "num_threads": 6})
    key = json.dumps
    assert sorted(map(key, our_requests)) == sorted(map(key, dspy_requests))
    assert _summary(ours) == _summary(theirs)


def test_simba_concurrent_scores_early_only_the_winners_the_selection_keeps(
    simba_server: LMServer,
) -> None:
    """4 steps, 2 candidates: the final selection scores winners 0, 2 and 4 of 5, so only
    winners 0 and 2 are sure to be scored before the last step; no other winner is."""
    args = {**ARGS, "num_candidates": 2, "max_steps": 4, "bsize": 3}
    theirs, dspy_requests = _compile(simba_server, dspy, dspy.SIMBA, {**args, "num_threads": 1})
    ours, our_requests = _compile(simba_server, dspex, SIMBA, {**args, "num_threads": 3})
    key = json.dumps
    assert sorted(map(key, our_requests)) == sorted(map(key, dspy_requests))
    assert _summary(ours) == _summary(theirs)
    assert len(ours.candidate_programs) == 3


async def test_simba_slots_go_to_step_jobs_before_background_jobs() -> None:
    from dspex.teleprompt.simba import _Slots

    slots = _Slots(1)
    await slots.acquire(background=False)
    order: list[str] = []

    async def take(name: str, background: bool) -> None:
        await slots.acquire(background)
        order.append(name)
        slots.release()

    tasks = [asyncio.create_task(take("late", True))]
    await asyncio.sleep(0)
    cancelled = asyncio.create_task(take("cancelled", False))
    tasks.append(asyncio.create_task(take("step", False)))
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.sleep(0)
    slots.release()
    await asyncio.gather(*tasks)
    assert order == ["step", "late"]
    assert slots.free == 1 and not any(slots.waiters)


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        {"max_demos": 0, "teacher": True, "rich": True, "seed": 1},
        {"max_demos": 1, "seed": 5, "bsize": 3, "max_steps": 4},
        {"bad_advice": True},
    ],
)
def test_simba_variants_same_requests(simba_server: LMServer, args: dict[str, Any]) -> None:
    full = {**ARGS, **args, "num_threads": 1}
    theirs, dspy_requests = _compile(simba_server, dspy, dspy.SIMBA, full)
    ours, our_requests = _compile(simba_server, dspex, SIMBA, full)
    assert our_requests == dspy_requests
    assert _summary(ours) == _summary(theirs)


@pytest.mark.parametrize("share", [0.3, 0.93])
def test_simba_max_lm_calls_stops_on_a_prefix_of_dspys_requests(
    simba_server: LMServer, dspy_main: tuple[Any, Any], share: float
) -> None:
    """Stopped in a step (0.3) or in the final scoring (0.93): the requests made are the
    first ones DSPy makes, at most one program run (2 calls) past the limit."""
    _, dspy_requests = dspy_main
    limit = int(len(dspy_requests) * share)
    args, seed = _run_args({**ARGS, "num_threads": 1, "max_lm_calls": limit})
    simba_server.clear()
    simba_server.add_rule(None, reply)
    with dspex.context(lm=_lm(dspex, simba_server)):
        optimizer = SIMBA(metric=exact, **args)
        program = optimizer.compile(
            _oracle.two_step(dspex), trainset=trainset(dspex, NUMBERS), seed=seed
        )
    ours = request_log(simba_server)
    assert limit <= len(ours) <= limit + 1
    assert ours == dspy_requests[: len(ours)]
    assert optimizer.budget.total == len(ours)
    assert program.candidate_programs
    assert program.candidate_programs[0]["score"] == max(
        c["score"] for c in program.candidate_programs
    )


def test_simba_rejects_bad_input(simba_server: LMServer) -> None:
    examples = trainset(dspex, NUMBERS)
    with pytest.raises(OptimizerError, match="Trainset too small: 8 < 32"):
        SIMBA(metric=exact).compile(_oracle.two_step(dspex), trainset=examples)
    with pytest.raises(AssertionError):  # DSPy asserts; OptimizerError is one too
        SIMBA(metric=exact, bsize=9).compile(_oracle.two_step(dspex), trainset=examples)
    with pytest.raises(OptimizerError, match="num_threads"):
        SIMBA(metric=exact, num_threads=0)
    with pytest.raises(OptimizerError, match="max_lm_calls"):
        SIMBA(metric=exact, max_lm_calls=0)
    with dspex.context(lm=None), pytest.raises(OptimizerError, match="needs an LM"):
        SIMBA(metric=exact, bsize=2).compile(_oracle.two_step(dspex), trainset=examples)


def test_simba_program_errors_score_zero(simba_server: LMServer) -> None:
    """A program that raises is scored 0 (logged), as DSPy does; the run completes."""

    class Broken(dspex.Module):
        def __init__(self) -> None:
            super().__init__()
            self.answer = dspex.Predict("question -> answer")

        def forward(self, question: str) -> Any:
            raise RuntimeError("boom")

    simba_server.clear()
    simba_server.add_rule(None, reply)
    with dspex.context(lm=_lm(dspex, simba_server)):
        program = SIMBA(metric=exact, bsize=2, num_candidates=2, max_steps=1).compile(
            Broken(), trainset=trainset(dspex, NUMBERS[:4])
        )
    assert [c["score"] for c in program.candidate_programs] == [0.0, 0.0]
    assert simba_server.requests == []


def _rule_request(server: LMServer, lib: Any, utils: Any) -> tuple[Any, str]:
    """``append_a_rule`` called directly (sync), on a bucket built by hand: a trace with an
    input orjson cannot serialize and a metric's extra fields."""
    server.clear()
    server.add_rule(None, reply)
    system = _oracle.two_step(lib)
    names = {id(p): n for n, p in system.named_predictors()}
    example = trainset(lib, [9])[0]
    draft = system.draft

    def run(score: float, answer: str) -> dict[str, Any]:
        outputs = lib.Prediction(draft=f"draft {answer}")
        return {
            "prediction": lib.Prediction(reasoning="r", answer=answer),
            "trace": [(draft, {"question": example.question, "hint": object()}, outputs)],
            "score": score,
            "example": example,
            "output_metadata": {"feedback": f"got {answer}"},
        }

    with lib.context(lm=_lm(lib, server)):
        done = utils.append_a_rule(
            [run(1.0, "odd"), run(0.0, "even")],
            system,
            predictor2name=names,
            name2predictor=dict(system.named_predictors()),
            batch_10p_score=0.0,
            batch_90p_score=1.0,
            prompt_model=None,
        )
    assert done is True
    return request_log(server), system.answer.predict.signature.instructions


def test_append_a_rule_same_request_and_instructions(simba_server: LMServer) -> None:
    from dspy.teleprompt import simba_utils as dspy_utils

    from dspex.teleprompt import simba_utils

    theirs = _rule_request(simba_server, dspy, dspy_utils)
    ours = _rule_request(simba_server, dspex, simba_utils)
    assert ours == theirs
    assert "<non-serializable: object>" in str(ours[0])
    assert ours[1].startswith(
        "Given the fields `question`, `draft`, produce the fields `answer`.\n\nRule "
    )
