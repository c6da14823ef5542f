"""Crashes, hard timeouts, resource limits, crash loops, saturation, cancellation, recycling."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable

import psutil
import pytest

from conftest import HERE, leftover_processes
from dspex import telemetry
from dspex.errors import (
    ExecutionTimeout,
    PoolSaturated,
    PoolUnhealthy,
    QueueTimeout,
    ResourceLimitExceeded,
    WorkerCrashed,
)
from dspex.pool import Pool


async def wait_until(cond: Callable[[], bool], within: float) -> bool:
    end = time.monotonic() + within
    while time.monotonic() < end:
        if cond():
            return True
        await asyncio.sleep(0.02)
    return cond()


def _running(pool: Pool) -> list[int]:
    # busy *with a call*: a worker whose reply was just delivered is still "busy" for an
    # instant (until the pool thread checks it in), with no request
    return [w.pid for w in list(pool._workers.values()) if w.state == "busy" and w.req is not None]


async def busy_pid(pool: Pool) -> int:
    assert await wait_until(lambda: bool(_running(pool)), 5)
    return _running(pool)[0]


@pytest.mark.parametrize("fork_server", [True, False])
async def test_kill9_idempotent_call_retries_once(
    make_pool: Callable[..., Pool], fork_server: bool
) -> None:
    pool = make_pool(size=2, fork_server=fork_server)
    await pool.start()
    task = asyncio.create_task(pool.call("sleep", 0.5, idempotent=True))
    os.kill(await busy_pid(pool), signal.SIGKILL)
    assert await task == 0.5
    assert pool.stats()["retries"] == 1
    assert await wait_until(lambda: pool.stats()["idle"] == 2, 5)


@pytest.mark.parametrize("fork_server", [True, False])
async def test_kill9_non_idempotent_call_fails_fast_and_pool_refills(
    make_pool: Callable[..., Pool], fork_server: bool
) -> None:
    pool = make_pool(size=2, fork_server=fork_server)
    await pool.start()
    task = asyncio.create_task(pool.call("sleep", 30))
    pid = await busy_pid(pool)
    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(WorkerCrashed) as info:
        await task
    assert time.monotonic() - killed_at < 2.0
    assert info.value.pid == pid and info.value.signal == signal.SIGKILL
    assert await wait_until(lambda: pool.stats()["idle"] == 2, 5.0)
    assert pid not in pool.stats()["pids"]


async def test_eight_calls_on_four_workers_only_the_killed_one_fails(
    make_pool: Callable[..., Pool],
) -> None:
    pool = make_pool(size=4)
    await pool.start()
    tasks = [asyncio.create_task(pool.call("sleep", 0.6)) for _ in range(8)]
    pid = await busy_pid(pool)
    os.kill(pid, signal.SIGKILL)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    crashed = [r for r in results if isinstance(r, WorkerCrashed)]
    assert len(crashed) == 1 and crashed[0].pid == pid
    assert [r for r in results if not isinstance(r, WorkerCrashed)] == [0.6] * 7


@pytest.mark.parametrize("method", ["spin", "sleep", "blocking_c_call", "asleep"])
async def test_hard_timeout_kills_the_worker(make_pool: Callable[..., Pool], method: str) -> None:
    pool = make_pool(size=1)
    await pool.start()
    args = (60,) if method in ("sleep", "asleep") else ()
    start = time.monotonic()
    with pytest.raises(ExecutionTimeout):
        await pool.call(method, *args, timeout=1.0)
    assert abs(time.monotonic() - start - 1.0) <= 0.5
    assert await pool.call("ping") == "pong"  # the replacement works


async def test_sync_call_hard_timeout(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(size=1)
    await pool.start()
    start = time.monotonic()
    with pytest.raises(ExecutionTimeout):
        await asyncio.to_thread(pool.call_sync, "spin", timeout=0.5)
    assert abs(time.monotonic() - start - 0.5) <= 0.5


@pytest.mark.parametrize("kind", ["rss", "address_space"])
async def test_memory_cap_gives_typed_error_and_replaces_worker(
    make_pool: Callable[..., Pool], kind: str
) -> None:
    pool = make_pool(size=1, memory_limit_mb=300, memory_limit_kind=kind)
    await pool.start()
    pid = await pool.call("pid")
    host_rss = psutil.Process().memory_info().rss
    with pytest.raises(ResourceLimitExceeded) as info:
        await pool.call("allocate", 3000)
    assert info.value.resource == "memory"
    assert psutil.Process().memory_info().rss < host_rss + 100 * 2**20  # the host is unaffected
    assert await pool.call("allocate", 10) == 10 * 2**20
    assert await pool.call("pid") != pid


async def test_cpu_limit(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(size=1, cpu_limit_s=1)
    await pool.start()
    with pytest.raises(ResourceLimitExceeded) as info:
        await pool.call("burn_cpu", timeout=10)
    assert info.value.resource == "cpu"
    assert await pool.call("ping") == "pong"


async def test_open_files_limit(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(size=1, open_files_limit=64)
    await pool.start()
    assert await pool.call("open_files", 10) == 10
    with pytest.raises(ResourceLimitExceeded) as info:
        await pool.call("open_files", 200)
    assert info.value.resource == "files"
    assert await pool.call("ping") == "pong"


@pytest.mark.parametrize("fork_server", [True, False])
async def test_crash_looping_init_makes_the_pool_unhealthy(
    make_pool: Callable[..., Pool], fork_server: bool
) -> None:
    pool = make_pool(target="handlers:broken", size=2, fork_server=fork_server)
    start = time.monotonic()
    with pytest.raises(PoolUnhealthy) as info:
        await pool.start()
    assert "factory exploded" in str(info.value.last_error)
    assert time.monotonic() - start < 15
    with pytest.raises(PoolUnhealthy, match="factory exploded"):
        await pool.call("ping")
    assert pool.stats()["state"] == "unhealthy"


async def test_import_error_of_target_is_unhealthy(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(target="no_such_module_xyz:make", size=1)
    with pytest.raises(PoolUnhealthy, match="no_such_module_xyz"):
        await pool.call("ping")


async def test_startup_timeout(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(
        target="handlers:slow_init",
        size=1,
        startup_timeout=0.5,
        max_init_failures=2,
        fork_server=False,  # the worker (not a loaded machine's template start) times out
    )
    with pytest.raises(PoolUnhealthy, match="not ready within"):
        await pool.start()


async def test_crashing_calls_hit_restart_intensity(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(size=1, max_restarts=2, restart_window=30)
    await pool.start()
    for _ in range(3):
        with pytest.raises(WorkerCrashed):
            await pool.call("die")
    with pytest.raises(PoolUnhealthy, match="restarts"):
        await pool.call("ping")


async def test_queue_bound_and_queue_timeout(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(size=1, max_queue=2, queue_timeout=0.3)
    await pool.start()
    with telemetry.capture("dspex.pool.saturated") as cap:
        running = asyncio.create_task(pool.call("sleep", 1.0))
        await asyncio.sleep(0.1)
        queued = [asyncio.create_task(pool.call("ping")) for _ in range(2)]
        await asyncio.sleep(0.05)
        start = time.monotonic()
        with pytest.raises(PoolSaturated):
            await pool.call("ping")
        assert time.monotonic() - start < 0.1
        for task in queued:
            with pytest.raises(QueueTimeout):
                await task
    assert cap.names() == ["dspex.pool.saturated"]
    assert await running == 1.0


async def test_cancelling_the_caller_cancels_the_call(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(size=1, cancel_grace=5.0)
    await pool.start()
    pid = await pool.call("pid")
    task = asyncio.create_task(pool.call("cooperative", 30))
    await busy_pid(pool)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # the worker saw the cancellation and is free again without being killed
    assert await wait_until(lambda: pool.stats()["idle"] == 1, 3)
    assert await pool.call("pid") == pid


async def test_cancelled_uncooperative_call_is_killed_after_grace(
    make_pool: Callable[..., Pool],
) -> None:
    pool = make_pool(size=1, cancel_grace=0.3)
    await pool.start()
    pid = await pool.call("pid")
    task = asyncio.create_task(pool.call("spin"))
    await busy_pid(pool)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await pool.call("pid", timeout=5) != pid


async def test_cancel_async_handler_method(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(size=1, cancel_grace=5.0)
    await pool.start()
    pid = await pool.call("pid")
    task = asyncio.create_task(pool.call("asleep", 30))
    await busy_pid(pool)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await wait_until(lambda: pool.stats()["idle"] == 1, 3)
    assert await pool.call("pid") == pid


async def test_cancel_a_queued_call(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(size=1)
    await pool.start()
    running = asyncio.create_task(pool.call("sleep", 0.3))
    await busy_pid(pool)
    queued = asyncio.create_task(pool.call("ping"))
    await asyncio.sleep(0.05)
    assert pool.stats()["queued"] == 1
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert await wait_until(lambda: pool.stats()["queued"] == 0, 2)
    assert await running == 0.3


async def test_recycle_by_max_requests_and_ttl(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(size=1, max_requests=3)
    await pool.start()
    pids = [await pool.call("pid") for _ in range(7)]
    assert len(set(pids)) == 3
    assert pool.stats()["recycles"] >= 2

    ttl_pool = make_pool(size=1, ttl=0.5, name="ttl")
    first = await ttl_pool.call("pid")
    await asyncio.sleep(1.2)
    assert await ttl_pool.call("pid") != first


async def test_recycle_by_the_workers_own_rss(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(size=1, recycle_rss_mb=150)
    await pool.start()
    pid = await pool.call("pid")

    await pool.call("allocate", 5)
    assert await pool.call("pid") == pid
    # keep 300 MB alive inside the worker: its RSS (not the parent's) crosses the threshold
    await pool.call("echo", None)
    with telemetry.capture("dspex.pool.worker.recycle") as cap:
        await pool.call("retain", 300)
        assert await wait_until(lambda: bool(cap.events), 5)
    assert cap.events[0][2]["reason"] == "rss"
    assert await pool.call("pid", timeout=10) != pid


@pytest.mark.parametrize("fork_server", [True, False])
async def test_double_forked_grandchild_dies_with_its_worker(
    make_pool: Callable[..., Pool], fork_server: bool
) -> None:
    pool = make_pool(size=1, fork_server=fork_server)
    await pool.start()
    grandchild = await pool.call("grandchild")
    assert psutil.pid_exists(grandchild)
    os.kill(await pool.call("pid"), signal.SIGKILL)
    assert await wait_until(lambda: not _alive(grandchild), 3)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


PARENT = textwrap.dedent(
    """
    import os, sys, time
    sys.path.insert(0, {here!r})
    from dspex.pool import Pool
    pools = [Pool(target="handlers:make", size=2, fork_server=fs, pythonpath=({here!r},)) for fs in (True, False)]
    pids = []
    for p in pools:
        p.start_sync()
        pids += p.stats()["pids"]
        pids.append(p.call_sync("grandchild"))
    print(" ".join(map(str, pids)), flush=True)
    time.sleep(60)
    """
)


def poll_until(cond: Callable[[], bool], within: float) -> bool:
    end = time.monotonic() + within
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def test_workers_die_within_2s_when_the_parent_is_sigkilled() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", PARENT.format(here=HERE)], stdout=subprocess.PIPE, text=True
    )
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        pids = [int(x) for x in line.split()]
        workers = pids[:2] + pids[3:5]
        assert len(workers) == 4 and all(_alive(p) for p in workers)
        proc.kill()
        killed = time.monotonic()
        assert poll_until(lambda: not any(_alive(p) for p in workers), 2.0)
        assert time.monotonic() - killed <= 2.0
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
    # grandchildren reparented away from the dead parent are swept by the next pool start
    from dspex.pool import _procs

    _procs._swept = False
    assert poll_until(lambda: _procs.sweep_leftovers() >= 0 and not any(_alive(p) for p in pids), 5)
    assert not leftover_processes(0.5)
