"""The fan-out ``Executor`` under ``Parallel``/``Evaluate``: workers start lazily.

The first worker runs alone; the others (up to ``num_threads``) start once a worker has
suspended with items waiting. These tests pin what that must not change: the width is reached
when items wait, never exceeded, results keep their order, errors/cancellation/interrupts
behave as before, and items that never suspend (an in-process LM) run in one task.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import pytest

from dspex.errors import ExampleTimeout, ExecutionCancelled
from dspex.modules.executor import Executor, async_entry, configured_lm_customized


class Gauge:
    """Counts items in flight and remembers the peak."""

    def __init__(self) -> None:
        self.inside = 0
        self.peak = 0

    def enter(self) -> None:
        self.inside += 1
        self.peak = max(self.peak, self.inside)

    def leave(self) -> None:
        self.inside -= 1


def test_waiting_items_reach_the_full_width_and_never_exceed_it() -> None:
    gauge = Gauge()
    full = asyncio.Event()

    async def item(x: int) -> int:
        gauge.enter()
        if gauge.inside == 3:
            full.set()
        # the first three hold until all three are in flight (fails by timeout, never hangs)
        if x < 3:
            await asyncio.wait_for(full.wait(), timeout=10)
        for _ in range(x % 4):
            await asyncio.sleep(0)
        gauge.leave()
        return x * 10

    out = Executor[int, int](num_threads=3).run(item, list(range(12)))
    assert out.results == [x * 10 for x in range(12)]
    assert out.completed == 12 and not out.errors
    assert gauge.peak == 3


def test_items_that_never_suspend_run_in_one_task() -> None:
    seen: list[Any] = []

    async def item(x: int) -> int:
        seen.append(asyncio.current_task())
        return x + 1

    ex = Executor[int, int](num_threads=8)
    out = ex.run(item, list(range(20)))
    assert out.results == list(range(1, 21))
    assert len(set(map(id, seen))) == 1 and len(ex._tasks) == 1


def test_a_later_wait_widens_the_run() -> None:
    """Items run inline until one waits; then the other workers start."""
    gauge = Gauge()

    async def item(x: int) -> int:
        gauge.enter()
        if x >= 5:
            await asyncio.sleep(0.01)
        gauge.leave()
        return x

    ex = Executor[int, int](num_threads=4)
    out = ex.run(item, list(range(12)))
    assert out.results == list(range(12))
    assert gauge.peak == 4 and len(ex._tasks) == 4


def test_errors_and_max_errors_with_lazy_workers(caplog: Any) -> None:
    async def item(x: int) -> int:
        await asyncio.sleep(0)
        if x % 2:
            raise RuntimeError(f"bad {x}")
        return x

    out = Executor[int, int](num_threads=3, max_errors=100).run(item, list(range(6)))
    assert out.results == [0, None, 2, None, 4, None]
    assert sorted(out.errors) == [1, 3, 5]
    with pytest.raises(ExecutionCancelled) as info:
        Executor[int, int](num_threads=3, max_errors=2).run(item, list(range(50)))
    assert info.value.errors >= 2


def test_deadline_still_applies_per_item() -> None:
    async def item(x: int) -> int:
        await asyncio.sleep(10 if x == 2 else 0)
        return x

    out = Executor[int, int](num_threads=2, timeout=0.05, max_errors=10).run(item, [0, 1, 2, 3])
    assert out.results == [0, 1, None, 3]
    assert isinstance(out.errors[2], ExampleTimeout)


async def test_cancelling_the_caller_cancels_every_worker() -> None:
    started = Gauge()
    ex = Executor[int, int](num_threads=3)

    async def item(x: int) -> int:
        started.enter()
        await asyncio.sleep(30)
        return x

    run = asyncio.ensure_future(ex.arun(item, list(range(10))))
    for _ in range(100):
        await asyncio.sleep(0)
        if started.peak == 3:
            break
    assert started.peak == 3
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert len(ex._tasks) == 3 and all(task.done() for task in ex._tasks)
    assert ex._ramp is None


def test_interrupt_before_the_loop_starts_ends_without_running_items() -> None:
    ran: list[int] = []

    async def item(x: int) -> int:
        ran.append(x)
        return x

    ex = Executor[int, int](num_threads=4)
    ex._interrupted = True  # as the SIGINT handler leaves it when Ctrl-C comes first
    out = ex.run(item, list(range(5)))
    assert out.interrupted and ran == [] and out.results == [None] * 5


def test_empty_input_and_the_sigint_handler_is_restored() -> None:
    before = signal.getsignal(signal.SIGINT)

    async def item(x: int) -> int:
        return x

    assert Executor[int, int](num_threads=2).run(item, []).results == []
    assert Executor[int, int](num_threads=2).run(item, [1]).results == [1]
    assert signal.getsignal(signal.SIGINT) is before


def test_async_entry_is_the_modules_own_acall() -> None:
    import dspex

    predict = dspex.Predict("question -> answer")
    entry = async_entry(predict, inline=False)
    assert entry == predict.acall  # awaited directly: no wrapper coroutine

    def plain(question: str) -> str:
        return question

    assert asyncio.run(async_entry(plain, inline=True)(question="q")) == "q"
    # a module called the sync way goes through the caller (a worker thread or inline)
    with dspex.context(lm=dspex.testing.DummyLM([{"answer": "a"}])):
        assert configured_lm_customized() is False
        sync_entry = async_entry(predict, inline=True, sync=True)
        assert sync_entry != predict.acall
        assert asyncio.run(sync_entry(question="q")).answer == "a"
