"""Pipelines mixing native steps with real DSPy 3.4.1 steps in pool workers, against LMServer."""

from __future__ import annotations

import time
from typing import Any

import pytest

import dspex
from dspex import pipeline as pl
from dspex.pipelines import Step
from dspex.testing import Fault, LMServer

pytestmark = pytest.mark.dspy


def test_mixed_pipeline_with_dspy_steps_shares_one_worker_per_run(
    server: LMServer, lm: dspex.LM
) -> None:
    pipe = dspex.pipeline(
        [
            pl.template("Research: {{ question }}", output="prompt"),
            ("dspy", "dspy.ChainOfThought", {"signature": "prompt -> queries: list[str]"}),
            pl.parallel(
                [
                    ("dspy", "dspy.Predict", {"signature": "prompt -> angle"}),
                    ("native", dspex.Predict, {"signature": "prompt -> keywords: list[str]"}),
                    pl.step(lambda queries: {"n_queries": len(queries)}, name="count"),
                ]
            ),
            pl.map(
                ("auto", "dspy.Predict", {"signature": "query -> note"}),
                over="queries",
                as_="query",
            ),
        ]
    )
    assert pipe.implementation == "mixed"
    result = pipe.run(question="why is the sky blue?")
    assert result.ok and isinstance(result["queries"], list) and isinstance(result["angle"], str)
    assert result["n_queries"] == len(result["queries"]) == len(result["note"])
    impl = {s.name: s.implementation for s in result.walk()}
    assert impl["ChainOfThought"] == "dspy" and impl["parallel/Predict"] == "dspy"
    assert impl["parallel/Predict_2"] == "native" and impl["parallel"] == "mixed"
    assert impl["map"] == "native"  # 'auto' chose the native Predict
    assert result.steps[1].tokens > 0 and result.tokens >= result.steps[1].tokens
    # both DSPy steps of the run ran in one session: the run's objects were dropped afterwards
    from dspex.bridge import dspy_pool

    assert dspy_pool().stats()["sessions"] == 0


def test_dspy_session_is_shared_by_the_steps_of_a_run(lm: dspex.LM) -> None:
    seen: list[Any] = []

    class Spy(Step):  # records the run's session (what the DSPy steps are built in)
        async def execute(self, state: Any, run: Any, frame: Any, path: str, children: Any) -> Any:
            seen.append(run.dspy_session())
            return {}

    pipe = dspex.pipeline(
        [
            ("dspy", "dspy.Predict", {"signature": "question -> answer"}),
            Spy("spy"),
            ("dspy", "dspy.Predict", {"signature": "answer -> check"}),
        ]
    )
    pipe.run(question="q")
    pipe.run(question="q")
    assert len(seen) == 2 and seen[0] is not seen[1]  # one session per run


def test_step_timeout_cancels_an_in_flight_pool_call_and_frees_the_worker(
    server: LMServer, lm: dspex.LM
) -> None:
    from dspex.bridge import dspy_pool

    pipe = dspex.pipeline(
        [pl.step("dspy.Predict", "question -> answer", implementation="dspy", timeout=2.0)]
    )
    # warm the pool (worker start + DSPy import) outside the 2 s budget, so the test does not
    # depend on an earlier test having started it, nor on how loaded the machine is
    dspex.pipeline([pl.step("dspy.Predict", "question -> answer", implementation="dspy")]).run(
        question="warm up"
    )
    pipe.run(question="warm up")
    server.fault(Fault(hang=True))
    start = time.perf_counter()
    with pytest.raises(dspex.StepTimeout, match=r"'Predict' exceeded its 2(\.0)? s timeout"):
        pipe.run(question="hangs")
    # bounded (the LM hangs forever), generous for loaded machines: not a speed assertion
    assert time.perf_counter() - start < 20
    deadline = time.monotonic() + 5
    while dspy_pool().stats()["busy"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert dspy_pool().stats()["busy"] == 0  # the worker was freed (cancelled, not stuck)
    start = time.perf_counter()
    assert pipe.run(question="after").ok  # and the next call runs (not queued behind the hang)
    assert time.perf_counter() - start < 20


def test_failing_dspy_branch_with_and_without_continue_on_error(
    server: LMServer, lm: dspex.LM
) -> None:
    steps = [
        pl.parallel(
            [
                pl.step("dspy.Predict", "question -> answer", implementation="dspy", name="remote"),
                pl.step(lambda question: {"local": question[::-1]}, name="local"),
            ],
            name="fan",
        )
    ]
    server.fault(Fault(status=400, match=lambda r: True))
    with pytest.raises(dspex.PipelineError) as info:
        dspex.pipeline(steps).run(question="abc")
    assert info.value.step == "fan/remote"  # type: ignore[attr-defined]
    assert isinstance(info.value.cause, dspex.LMError)  # type: ignore[attr-defined]
    server.fault(Fault(status=400, match=lambda r: True))
    result = dspex.pipeline(steps, continue_on_error=True).run(question="abc")
    assert result["local"] == "cba" and "answer" not in result
    assert [e.step for e in result.errors] == ["fan/remote"]  # type: ignore[attr-defined]
