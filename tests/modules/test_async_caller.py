"""AsyncCaller's adaptive mode: a sync metric runs on the loop until it really blocks it.

A call counts as slow only if it waited (gave up the CPU) or computed past the budget; a call
that was merely preempted on a loaded machine does not move the rest of the run to threads.
"""

from __future__ import annotations

import asyncio
import sys
import time

import pytest

from dspex.modules import executor
from dspex.modules.executor import INLINE_BUDGET, SLOW_CALLS, AsyncCaller, blocked_the_loop

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="per-thread usage is Linux's"
)


def test_the_decision() -> None:
    over = INLINE_BUDGET * 5
    assert not blocked_the_loop(INLINE_BUDGET / 2, 0.0, 3, measured=True)  # fast: never slow
    assert blocked_the_loop(over, 0.0, 1, measured=True)  # it waited (I/O, sleep, lock)
    assert blocked_the_loop(over, over, 0, measured=True)  # it computed that long
    assert not blocked_the_loop(over, INLINE_BUDGET / 4, 0, measured=True)  # preempted
    assert blocked_the_loop(over, 0.0, 0, measured=False)  # no per-thread usage: wall decides


def _run(caller: AsyncCaller, times: int) -> list[object]:
    async def go() -> list[object]:
        return [await caller(i) for i in range(times)]

    return asyncio.run(go())


@linux_only
def test_a_blocking_metric_moves_to_a_thread_after_slow_calls() -> None:
    def metric(i: int) -> int:
        time.sleep(INLINE_BUDGET * 3)
        return i

    caller = AsyncCaller(metric, inline=False, adaptive=True)
    assert _run(caller, SLOW_CALLS) == list(range(SLOW_CALLS))
    assert caller.adaptive is False and caller.slow_calls == SLOW_CALLS


@linux_only
def test_a_computing_metric_moves_to_a_thread_too() -> None:
    def metric(i: int) -> int:
        end = time.thread_time() + INLINE_BUDGET * 3
        while time.thread_time() < end:
            pass
        return i

    caller = AsyncCaller(metric, inline=False, adaptive=True)
    _run(caller, SLOW_CALLS)
    assert caller.adaptive is False


def test_a_fast_metric_stays_on_the_loop() -> None:
    caller = AsyncCaller(lambda i: i, inline=False, adaptive=True)
    assert _run(caller, 50) == list(range(50))
    assert caller.adaptive is True and caller.slow_calls == 0


@linux_only
def test_a_preempted_call_is_not_slow(monkeypatch: pytest.MonkeyPatch) -> None:
    """Wall time over the budget with neither a wait nor the CPU spent: what a preempted
    call looks like (simulated: the thread's usage reads the same before and after)."""
    monkeypatch.setattr(executor, "_thread_usage", lambda: (1.0, 7))

    def metric(i: int) -> int:
        end = time.perf_counter() + INLINE_BUDGET * 3
        while time.perf_counter() < end:
            pass
        return i

    caller = AsyncCaller(metric, inline=False, adaptive=True)
    _run(caller, SLOW_CALLS + 2)
    assert caller.adaptive is True and caller.slow_calls == 0
