"""Pipelining: a call queued in a busy worker's socket behind the running one.

Each test makes pipelining deterministic: ``pipeline_below`` is huge (every call counts as
short) and one call of each method first records its cost, so the second call submitted
while the first runs is pipelined behind it (checked on the worker's backlog, never timed).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable

import pytest
from test_faults import wait_until

from dspex.errors import ExecutionTimeout, QueueTimeout, WorkerCrashed
from dspex.pool import Pool

ALWAYS = 1e9  # pipeline_below: every call counts as short


def _workers(pool: Pool) -> list[object]:
    return list(pool._workers.values())


def _backlog(pool: Pool) -> int:
    return sum(len(w.backlog) for w in pool._workers.values())


async def _pipelined_behind(
    pool: Pool, head: str, *head_args: object
) -> tuple[asyncio.Task[object], int]:
    """Start ``head`` on the only worker and wait until it runs; return it and the pid."""
    task: asyncio.Task[object] = asyncio.create_task(pool.call(head, *head_args))
    assert await wait_until(
        lambda: any(w.req is not None and w.req.method == head for w in pool._workers.values()),
        5,
    )
    (w,) = [w for w in pool._workers.values() if w.state == "busy"]
    return task, w.pid


async def _warm(pool: Pool, *calls: tuple[str, tuple[object, ...]]) -> None:
    for method, args in calls:
        await pool.call(method, *args)


async def test_fast_calls_are_pipelined_and_all_answered(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(size=1, pipeline=2, pipeline_below=ALWAYS)
    await pool.start()
    await _warm(pool, ("add", (0, 0)))
    results = await asyncio.gather(*(pool.call("add", i, 1) for i in range(200)))
    assert results == [i + 1 for i in range(200)]
    assert pool.stats()["pipelined"] > 0
    assert _backlog(pool) == 0


async def test_pipeline_off_queues_in_the_parent(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(size=1, pipeline=0, pipeline_below=ALWAYS)
    await pool.start()
    await _warm(pool, ("sleep", (0.0,)), ("ping", ()))
    head, _ = await _pipelined_behind(pool, "sleep", 0.3)
    queued = asyncio.create_task(pool.call("ping"))
    assert await wait_until(lambda: pool.stats()["queued"] == 1, 5)
    assert _backlog(pool) == 0
    assert await queued == "pong"
    assert await head == 0.3
    assert pool.stats()["pipelined"] == 0


async def test_slow_methods_are_not_pipelined(make_pool: Callable[..., Pool]) -> None:
    # default pipeline_below (10 ms): a method never seen, or seen slow, keeps others queued
    pool = make_pool(size=1, pipeline=2)
    await pool.start()
    await _warm(pool, ("sleep", (0.2,)), ("ping", ()))
    head, _ = await _pipelined_behind(pool, "sleep", 0.3)
    queued = asyncio.create_task(pool.call("ping"))
    assert await wait_until(lambda: pool.stats()["queued"] == 1, 5)
    assert _backlog(pool) == 0
    assert await queued == "pong"
    await head


async def test_call_behind_a_crashing_call_runs_elsewhere(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(size=1, pipeline=1, pipeline_below=ALWAYS)
    await pool.start()
    await _warm(pool, ("sleep", (0.0,)), ("pid", ()))
    head, pid = await _pipelined_behind(pool, "sleep", 30)
    behind = asyncio.create_task(pool.call("pid"))
    assert await wait_until(lambda: _backlog(pool) == 1, 5)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(WorkerCrashed):  # the running call: not idempotent
        await head
    new_pid = await behind  # never started: re-run on the replacement, no error
    assert new_pid != pid
    assert pool.stats()["retries"] == 0


async def test_idempotent_head_and_pipelined_call_both_rerun(
    make_pool: Callable[..., Pool],
) -> None:
    pool = make_pool(size=1, pipeline=1, pipeline_below=ALWAYS)
    await pool.start()
    await _warm(pool, ("sleep", (0.0,)), ("pid", ()))
    head = asyncio.create_task(pool.call("sleep", 30, idempotent=True))
    behind = asyncio.create_task(pool.call("pid"))
    killed = []
    for _ in range(2):  # the retry of the head gets the call behind it pipelined again
        assert await wait_until(lambda: _backlog(pool) == 1 and pool.stats()["busy"] == 1, 10)
        (w,) = [w for w in pool._workers.values() if w.state == "busy"]
        killed.append(w.pid)
        os.kill(w.pid, signal.SIGKILL)
        assert await wait_until(lambda w=w: w.state == "dead", 10)
    with pytest.raises(WorkerCrashed):  # retried once, then it fails
        await head
    assert await behind not in killed
    assert pool.stats()["retries"] == 1


async def test_cancel_a_pipelined_call_skips_it_in_the_worker(
    make_pool: Callable[..., Pool],
) -> None:
    pool = make_pool(size=1, pipeline=1, pipeline_below=ALWAYS, cancel_grace=30.0)
    await pool.start()
    await _warm(pool, ("sleep", (0.0,)), ("pid", ()))
    head, pid = await _pipelined_behind(pool, "sleep", 0.5)
    behind = asyncio.create_task(pool.call("count"))
    assert await wait_until(lambda: _backlog(pool) == 1, 5)
    behind.cancel()
    with pytest.raises(asyncio.CancelledError):
        await behind
    assert await head == 0.5
    assert await wait_until(lambda: _backlog(pool) == 0 and pool.stats()["idle"] == 1, 5)
    assert await pool.call("count") == 1  # the cancelled one never ran
    assert await pool.call("pid") == pid  # and the worker was not killed for it


async def test_deadline_of_a_pipelined_call_is_a_queue_timeout(
    make_pool: Callable[..., Pool],
) -> None:
    pool = make_pool(size=1, pipeline=1, pipeline_below=ALWAYS, cancel_grace=30.0)
    await pool.start()
    await _warm(pool, ("sleep", (0.0,)), ("pid", ()))
    head, pid = await _pipelined_behind(pool, "sleep", 1.0)
    behind = asyncio.create_task(pool.call("count", timeout=0.2))
    assert await wait_until(lambda: _backlog(pool) == 1, 5)
    with pytest.raises(QueueTimeout):
        await behind
    assert await head == 1.0
    assert await wait_until(lambda: _backlog(pool) == 0 and pool.stats()["idle"] == 1, 5)
    assert await pool.call("count") == 1  # the expired one never ran
    assert await pool.call("pid") == pid


async def test_head_timeout_kills_worker_and_pipelined_call_reruns(
    make_pool: Callable[..., Pool],
) -> None:
    pool = make_pool(size=1, pipeline=1, pipeline_below=ALWAYS)
    await pool.start()
    await _warm(pool, ("sleep", (0.0,)), ("pid", ()))
    head = asyncio.create_task(pool.call("sleep", 30, timeout=0.5))
    assert await wait_until(lambda: pool.stats()["busy"] == 1, 5)
    (w,) = _workers(pool)
    pid = w.pid  # type: ignore[attr-defined]
    behind = asyncio.create_task(pool.call("pid", timeout=20))
    assert await wait_until(lambda: _backlog(pool) == 1, 5)
    with pytest.raises(ExecutionTimeout):
        await head
    assert await behind != pid


async def test_pipelining_respects_max_requests(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(size=2, pipeline=2, pipeline_below=ALWAYS, max_requests=3)
    await pool.start()
    await _warm(pool, ("pid", ()))
    pids = await asyncio.gather(*(pool.call("pid") for _ in range(30)))
    assert max(pids.count(p) for p in set(pids)) <= 3
