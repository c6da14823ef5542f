"""Long stress tests (``pytest -m slow tests/pool``): kill/restart cycles and lossless calls."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Callable

import psutil
import pytest

from conftest import leftover_processes, marked_processes
from dspex import telemetry
from dspex.errors import WorkerCrashed
from dspex.pool import Pool

pytestmark = pytest.mark.slow


async def full(pool: Pool, within: float = 5.0, gone: int = 0) -> None:
    end = time.monotonic() + within
    while time.monotonic() < end:
        s = pool.stats()
        if s["idle"] == s["workers"] == pool.config.size and gone not in s["pids"]:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"pool not back to full size: {pool.stats()}")


# Without the fork server every restart boots a cold interpreter (~0.17 s quiet, 3-4x that
# under load 5), so 200 of them need more than the suite's default 120 s on a busy machine.
@pytest.mark.timeout(900)
@pytest.mark.parametrize("fork_server", [True, False])
async def test_200_kill_restart_cycles_leave_nothing_behind(
    make_pool: Callable[..., Pool], fork_server: bool
) -> None:
    pool = make_pool(size=2, fork_server=fork_server, max_restarts=10_000)
    await pool.start()
    grandchildren = []
    for cycle in range(200):
        if cycle % 10 == 0:
            grandchildren.append(await pool.call("grandchild"))
        pid = pool.stats()["pids"][cycle % 2]
        os.kill(pid, signal.SIGKILL)
        await full(pool, gone=pid)
    assert pool.stats()["restarts"] == 200
    assert await pool.call("add", 1, 1) == 2
    await pool.close()
    assert not leftover_processes()
    assert not marked_processes()
    zombies = [p for p in psutil.Process().children(recursive=True) if p.status() == "zombie"]
    assert not zombies
    assert not any(
        psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in grandchildren
    )


async def test_5000_calls_while_a_worker_is_killed_every_second(
    make_pool: Callable[..., Pool],
) -> None:
    pool = make_pool(size=4, max_restarts=10_000, max_queue=10_000)
    await pool.start()
    limit = asyncio.Semaphore(32)

    async def one(i: int) -> object:
        async with limit:
            return await pool.call("sleep", 0.004, idempotent=i % 2 == 0)

    async def killer(stop: asyncio.Event) -> int:
        kills = 0
        while not stop.is_set():
            await asyncio.sleep(1.0)
            pids = pool.stats()["pids"]
            if pids and not stop.is_set():
                try:
                    os.kill(pids[kills % len(pids)], signal.SIGKILL)
                    kills += 1
                except ProcessLookupError:
                    pass
        return kills

    with telemetry.capture("dspex.pool.call") as cap:
        stop = asyncio.Event()
        kill_task = asyncio.create_task(killer(stop))
        results = await asyncio.gather(*(one(i) for i in range(5000)), return_exceptions=True)
        stop.set()
        kills = await kill_task
    assert kills >= 3
    outcomes = Counter(type(r).__name__ for r in results)
    assert set(outcomes) <= {"float", "WorkerCrashed"}, outcomes
    crashed = [i for i, r in enumerate(results) if isinstance(r, WorkerCrashed)]
    assert all(i % 2 == 1 for i in crashed)  # idempotent calls were retried, never lost
    assert len(crashed) <= kills
    ends = Counter(
        e[2]["id"]
        for e in cap.events
        if e[0] in ("dspex.pool.call.stop", "dspex.pool.call.exception")
    )
    starts = [e[2]["id"] for e in cap.events if e[0] == "dspex.pool.call.start"]
    assert len(starts) == 5000
    assert all(ends[i] == 1 for i in starts)  # exactly one terminal state each
    assert len(ends) == 5000
    await full(pool)
