"""Issue 11 item 5: no call is lost after worker loss when it never started.

Kill -9 every worker (and the fork-server template) between calls: the next calls succeed
(they were never delivered to a live worker, so the pool re-dispatches them), and the template
is re-created. Under calls with a kill per second: the only failures are one ``WorkerCrashed``
per call that was running on a killed worker; every call ends exactly once; nothing hangs.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from dspex.errors import WorkerCrashed
from dspex.pool import Pool

HANDLERS = str(Path(__file__).resolve().parents[1] / "pool")


def dead(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_for(cond: Callable[[], bool], within: float = 20.0) -> bool:
    end = time.monotonic() + within
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


@pytest.fixture
def make_pool() -> Iterator[Callable[..., Pool]]:
    pools: list[Pool] = []

    def make(**options: Any) -> Pool:
        options.setdefault("target", "handlers:make")
        options.setdefault("pythonpath", (HANDLERS,))
        options.setdefault("max_restarts", 10_000)
        pool = Pool(name="chaos", **options)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.close_sync(cancel=True)


def template_pid(pool: Pool) -> int | None:
    proc = getattr(pool._spawner, "proc", None)
    return None if proc is None or proc.poll() is not None else int(proc.pid)


@pytest.mark.parametrize("fork_server", [True, False])
def test_kill_every_worker_and_the_template_between_calls(
    make_pool: Callable[..., Pool], fork_server: bool
) -> None:
    pool = make_pool(size=2, fork_server=fork_server)
    pool.start_sync()
    for round_ in range(3):
        assert pool.call_sync("ping") == "pong"  # sync callers park the workers
        victims = list(pool.stats()["pids"])
        tpl = template_pid(pool)
        if tpl is not None:
            victims.append(tpl)
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        assert wait_for(lambda v=victims: all(dead(p) for p in v))
        # the next 10 calls succeed: 5 sync, 5 async
        assert [pool.call_sync("add", round_, i) for i in range(5)] == [
            round_ + i for i in range(5)
        ]

        async def five(r: int = round_) -> list[int]:
            return await asyncio.gather(*(pool.call("add", r, i) for i in range(5, 10)))

        assert asyncio.run(five()) == [round_ + i for i in range(5, 10)]
        if fork_server:
            assert template_pid(pool) not in (None, tpl)  # a new template serves the pool
    assert pool.state == "running"


def run_under_kills(pool: Pool, calls: int, concurrency: int, kill_every: float) -> None:
    """``calls`` calls, ``concurrency`` in flight, a worker killed every ``kill_every`` s."""
    pool.start_sync()
    killed: set[int] = set()
    outcomes: dict[int, list[Any]] = {i: [] for i in range(calls)}

    async def main() -> None:
        sem = asyncio.Semaphore(concurrency)
        rng = random.Random(7)

        async def one(i: int) -> None:
            async with sem:
                try:
                    outcomes[i].append(await pool.call("sleep", 0.002 * rng.randint(0, 3)))
                except Exception as exc:
                    outcomes[i].append(exc)

        async def killer() -> None:
            while True:
                await asyncio.sleep(kill_every)
                pids = [w.pid for w in pool._workers.values() if w.state == "busy" and w.pid]
                if pids:
                    pid = rng.choice(pids)
                    killed.add(pid)
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass

        k = asyncio.create_task(killer())
        try:
            await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(calls))), 600)
        finally:
            k.cancel()

    asyncio.run(main())
    assert all(len(o) == 1 for o in outcomes.values())  # exactly one terminal state each
    errors = [o[0] for o in outcomes.values() if isinstance(o[0], BaseException)]
    assert all(isinstance(e, WorkerCrashed) for e in errors), errors[:5]
    crashed = [e.pid for e in errors if isinstance(e, WorkerCrashed)]
    assert set(crashed) <= killed  # only calls running on a killed worker failed ...
    assert len(crashed) == len(set(crashed))  # ... one per killed worker at most
    assert killed  # the test did kill workers


def test_calls_under_kills_small(make_pool: Callable[..., Pool]) -> None:
    run_under_kills(make_pool(size=2), calls=400, concurrency=16, kill_every=0.3)


@pytest.mark.slow
def test_5000_calls_concurrency_64_kill_per_second(make_pool: Callable[..., Pool]) -> None:
    run_under_kills(make_pool(size=2), calls=5000, concurrency=64, kill_every=1.0)
