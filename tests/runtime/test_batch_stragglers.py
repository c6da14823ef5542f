"""``Module.batch(timeout=, straggler_limit=)``: a straggler gets a second attempt and the
first attempt to finish counts (DSPy's executor rule), in both the async and thread paths."""

from __future__ import annotations

import asyncio
import threading

import dspex
from dspex.utils.parallelizer import Outcomes, ParallelExecutor


class AsyncFlaky(dspex.Module):
    """The first attempt of ``x == 2`` hangs (until cancelled); every other attempt answers."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts: dict[int, int] = {}
        self.cancelled = 0

    async def aforward(self, x: int) -> dspex.Prediction:
        self.attempts[x] = self.attempts.get(x, 0) + 1
        if x == 2 and self.attempts[x] == 1:
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        return dspex.Prediction(y=x * 10)

    def forward(self, x: int) -> dspex.Prediction:  # pragma: no cover - batch uses aforward
        raise AssertionError("the async path is expected")


def test_async_batch_restarts_a_straggler_and_cancels_the_slow_attempt() -> None:
    program = AsyncFlaky()
    examples = [dspex.Example(x=i).with_inputs("x") for i in range(4)]
    results = program.batch(examples, num_threads=4, timeout=0.2, straggler_limit=1)
    assert [r.y for r in results] == [0, 10, 20, 30]
    assert program.attempts == {0: 1, 1: 1, 2: 2, 3: 1}
    assert program.cancelled == 1


def test_thread_batch_restarts_a_straggler_without_waiting_for_it() -> None:
    release = threading.Event()
    attempts: dict[int, int] = {}
    lock = threading.Lock()

    class Flaky(dspex.Module):
        def forward(self, x: int) -> dspex.Prediction:
            with lock:
                attempts[x] = attempts.get(x, 0) + 1
                first = attempts[x] == 1
            if x == 1 and first:
                release.wait(60)  # the slow first attempt; released at the end of the test
            return dspex.Prediction(y=x)

    try:
        examples = [dspex.Example(x=i).with_inputs("x") for i in range(3)]
        results = Flaky().batch(examples, num_threads=3, timeout=0.2, straggler_limit=1)
        assert [r.y for r in results] == [0, 1, 2]
        assert attempts == {0: 1, 1: 2, 2: 1}
    finally:
        release.set()


def test_no_second_attempt_while_many_items_remain_or_when_turned_off() -> None:
    out = Outcomes(5, max_errors=10, provide_traceback=False)
    for i in range(5):
        assert out.start(i)
    out.started = dict.fromkeys(range(5), 0.0)  # started long ago
    assert out.stragglers(timeout=1, limit=3) == []  # 5 unsettled > 3
    out.ok(0, "a")
    out.ok(1, "b")
    assert out.stragglers(timeout=0, limit=3) == []  # off
    assert out.stragglers(timeout=1, limit=3) == [2, 3, 4]
    assert out.stragglers(timeout=1, limit=3) == []  # once per item
    out.ok(2, "first")
    out.ok(2, "second attempt, ignored")
    assert out.results[2] == "first" and out.done == 3
    assert not out.start(2)


def test_parallel_executor_keeps_dspys_defaults() -> None:
    executor = ParallelExecutor(num_threads=2)
    assert (executor.timeout, executor.straggler_limit) == (120, 3)
    assert executor.execute(lambda item: item * 2, [1, 2, 3]) == [2, 4, 6]
