"""Native programs fanned out over worker pools: ``Evaluate``/``batch`` with ``backend=``.

The process-pool tests run real worker processes; the Ray ones a real local Ray cluster (one
per session, see conftest.py). Programs, metrics and errors here are defined in this test
file, which no worker can import: they travel by value.
"""

from __future__ import annotations

import asyncio
import collections
import os
import threading
from typing import Any

import pytest

import dspex
from dspex.errors import (
    ConfigurationError,
    ExecutionCancelled,
    ProgramNotPortable,
    RemoteError,
    WorkerCrashed,
)
from dspex.testing import LMServer

pytestmark = pytest.mark.timeout(300)


class Flaky(Exception):
    """A user exception type (defined here: it travels by value and comes back as itself)."""


class Unpicklable(Exception):
    def __init__(self, a: int, b: int) -> None:  # pickling calls Unpicklable(msg): fails
        super().__init__(f"{a}/{b}")


class QA(dspex.Module):
    def __init__(self) -> None:
        super().__init__()
        self.answer = dspex.ChainOfThought("question -> answer")

    def forward(self, question: str) -> Any:
        if "flaky" in question:
            raise Flaky(f"cannot answer {question}")
        if "odd" in question:
            raise Unpicklable(1, 2)
        if "crash" in question:
            os._exit(3)

        return self.answer(question=question)


def metric(example: Any, pred: Any, trace: Any = None) -> float:
    return float(len(pred.answer) % 3 == 0) + 0.5 * (example.question[-1] in pred.reasoning)


def devset(n: int, bad: tuple[str, ...] = ()) -> list[Any]:
    qs = [f"question {i}" for i in range(n)] + [f"{b} question" for b in bad]
    return [dspex.Example(question=q).with_inputs("question") for q in qs]


@pytest.fixture
def lm(server: LMServer) -> Any:
    server.clear()
    lm = dspex.LM("openai/t", api_base=server.url, api_key="k", cache=False, num_retries=0)
    dspex.configure(lm=lm)
    return lm


def bodies(server: LMServer) -> collections.Counter[bytes]:
    return collections.Counter(r.body for r in server.requests)


def same_results(a: Any, b: Any) -> None:
    assert a.score == b.score
    assert len(a.results) == len(b.results)
    for (ex_a, pred_a, score_a), (ex_b, pred_b, score_b) in zip(a.results, b.results, strict=True):
        assert ex_a == ex_b
        assert pred_a.toDict() == pred_b.toDict()
        assert pred_a.get_lm_usage() == pred_b.get_lm_usage()
        assert score_a == score_b


def evaluate_both(server: LMServer, backend: str, **options: Any) -> tuple[Any, Any]:
    dev = devset(24, bad=options.pop("bad", ()))
    evaluate = dspex.Evaluate(devset=dev, metric=metric, num_threads=4, **options)
    local = evaluate(QA())
    local_requests = bodies(server)
    server.clear()
    fanned = dspex.Evaluate(devset=dev, metric=metric, num_threads=4, backend=backend, **options)
    remote = fanned(QA())
    assert bodies(server) == local_requests  # the same LM requests, byte for byte
    return local, remote


# ---------------------------------------------------------------------------- process pool


def test_process_evaluate_equals_in_process(server: LMServer, lm: Any) -> None:
    dspex.configure(track_usage=True)
    local, remote = evaluate_both(server, "process")
    same_results(local, remote)
    assert 0 < local.score < 100
    assert remote.results[0][1].get_lm_usage()["openai/t"]["total_tokens"] > 0


def test_process_errors_keep_types_and_failure_score(
    server: LMServer, lm: Any, caplog: pytest.LogCaptureFixture
) -> None:
    local, remote = evaluate_both(server, "process", bad=("flaky", "odd"), failure_score=0.25)
    same_results(local, remote)
    assert [r[2] for r in remote.results[-2:]] == [0.25, 0.25]
    assert "cannot answer flaky question" in caplog.text
    with pytest.raises(ExecutionCancelled):
        dspex.Evaluate(
            devset=devset(4, bad=("flaky", "flaky", "odd")),
            metric=metric,
            max_errors=2,
            backend="process",
        )(QA())


def test_process_batch_returns_outputs_and_typed_failures(server: LMServer, lm: Any) -> None:
    examples = devset(6, bad=("flaky", "odd"))
    local = QA().batch(examples, num_threads=3, return_failed_examples=True)
    remote = QA().batch(examples, num_threads=3, return_failed_examples=True, backend="process")
    assert [p and p.toDict() for p in remote[0]] == [p and p.toDict() for p in local[0]]
    assert remote[1] == local[1] == examples[-2:]
    flaky, odd = remote[2]
    assert isinstance(flaky, Flaky) and "cannot answer" in str(flaky)
    assert isinstance(odd, RemoteError) and odd.remote_type.endswith("Unpicklable")


def test_usage_comes_back_to_the_callers_tracker(server: LMServer, lm: Any) -> None:
    from dspex.lm.usage import track_usage

    examples = devset(5)
    with track_usage() as here:
        QA().batch(examples)
    with track_usage() as there:
        QA().batch(examples, backend="process")
    assert there.get_total_tokens() == here.get_total_tokens()
    assert here.get_total_tokens()["openai/t"]["prompt_tokens"] > 0


def test_a_crashing_worker_fails_its_chunk_with_worker_crashed(server: LMServer, lm: Any) -> None:
    examples = devset(3, bad=("crash",))
    out, failed, errors = QA().batch(examples, backend="process", return_failed_examples=True)
    assert examples[-1] in failed and out[-1] is None  # (and its chunk mates, if any)
    assert errors and all(isinstance(e, WorkerCrashed) for e in errors)
    # the pool replaced the worker: the next run works
    assert all(p is not None for p in QA().batch(devset(3), backend="process"))


def test_bad_backend_and_unportable_programs_are_typed_errors(lm: Any) -> None:
    with pytest.raises(ConfigurationError, match="backend"):
        dspex.Evaluate(devset=devset(1), metric=metric, backend="spark")
    with pytest.raises(ConfigurationError, match="backend"):
        QA().batch(devset(1), backend="gpu")
    program = QA()
    program.lock = threading.Lock()  # type: ignore[attr-defined]
    with pytest.raises(ProgramNotPortable, match="cannot be sent"):
        program.batch(devset(1), backend="process")


class AsyncQA(dspex.Module):
    def __init__(self) -> None:
        super().__init__()
        self.answer = dspex.Predict("question -> answer")

    async def aforward(self, question: str) -> Any:
        if "slow" in question:
            await asyncio.sleep(60)
        return await self.answer.acall(question=question)


async def test_async_evaluate_with_per_example_deadlines(
    server: LMServer, lm: Any, caplog: pytest.LogCaptureFixture
) -> None:
    dev = devset(6, bad=("slow",))
    options: dict[str, Any] = {"devset": dev, "metric": metric, "timeout": 1.0}
    local = await dspex.Evaluate(**options, failure_score=0.0).acall(AsyncQA())
    assert caplog.text.count("did not finish within its deadline") == 1
    remote = await dspex.Evaluate(**options, failure_score=0.0, backend="process").acall(AsyncQA())
    assert caplog.text.count("did not finish within its deadline") == 2  # ExampleTimeout
    assert remote.score == local.score
    assert [r[2] for r in remote.results] == [r[2] for r in local.results]
    with pytest.raises(ExecutionCancelled):
        await dspex.Evaluate(**options, max_errors=1, backend="process").acall(AsyncQA())


# ---------------------------------------------------------------------------- Ray


def test_ray_evaluate_and_batch_equal_in_process(
    ray_cluster: Any, server: LMServer, lm: Any
) -> None:
    dspex.configure(track_usage=True)
    local, remote = evaluate_both(server, "ray", bad=("flaky",), failure_score=0.5)
    same_results(local, remote)
    examples = devset(5)
    assert [p.toDict() for p in QA().batch(examples, backend="ray")] == [
        p.toDict() for p in QA().batch(examples)
    ]


def test_a_pool_that_cannot_start_fails_the_run_once(lm: Any) -> None:
    from dspex.errors import PoolUnhealthy
    from dspex.pool import shutdown_pools

    shutdown_pools()
    dspex.configure(pools={"native": {"target": "no_such_module_here:make", "size": 1}})
    try:
        with pytest.raises(PoolUnhealthy):
            dspex.Evaluate(devset=devset(3), metric=metric, backend="process")(QA())
        with pytest.raises(PoolUnhealthy):
            QA().batch(devset(2), backend="process")
    finally:
        shutdown_pools()
