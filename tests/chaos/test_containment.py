"""Issue 11 item 7 (pool part): what a handler starts cannot outlive its worker, the pool's
close, or a SIGKILLed parent — even after ``setsid()`` — and a pool never signals processes
it did not start (another pool's, or anybody's leftovers)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from dspex.pool import Pool

HANDLERS = str(Path(__file__).resolve().parents[1] / "pool")


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_for(cond: Callable[[], bool], within: float = 10.0) -> bool:
    end = time.monotonic() + within
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


@pytest.fixture
def make_pool() -> Iterator[Callable[..., Pool]]:
    pools: list[Pool] = []

    def make(name: str = "contain", **options: Any) -> Pool:
        options.setdefault("target", "handlers:make")
        options.setdefault("pythonpath", (HANDLERS,))
        options.setdefault("max_restarts", 10_000)
        options.setdefault("size", 1)
        pool = Pool(name=name, **options)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.close_sync(cancel=True)


def test_setsid_grandchild_dies_with_its_worker(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool()
    pool.start_sync()
    grandchild = pool.call_sync("setsid_grandchild")
    assert alive(grandchild)
    assert psutil.Process(grandchild).ppid() == pool._spawner.proc.pid  # type: ignore[union-attr]
    time.sleep(0.2)
    assert alive(grandchild)  # its worker lives: it is left alone
    os.kill(pool.call_sync("pid"), signal.SIGKILL)
    assert wait_for(lambda: not alive(grandchild))
    assert pool.call_sync("ping") == "pong"


def test_setsid_grandchild_dies_at_pool_close(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool()
    pool.start_sync()
    grandchild = pool.call_sync("setsid_grandchild")
    pool.close_sync()
    assert wait_for(lambda: not alive(grandchild))


PARENT = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {here!r})
    from dspex.pool import Pool
    pool = Pool(target="handlers:make", size=2, pythonpath=({here!r},))
    pool.start_sync()
    print(" ".join(map(str, [*pool.stats()["pids"], pool.call_sync("setsid_grandchild")])),
          flush=True)
    time.sleep(60)
    """
)


def test_setsid_grandchild_dies_when_the_parent_is_sigkilled() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", PARENT.format(here=HANDLERS)], stdout=subprocess.PIPE, text=True
    )
    try:
        pids = [int(x) for x in proc.stdout.readline().split()]  # type: ignore[union-attr]
        assert len(pids) == 3 and all(alive(p) for p in pids)
        proc.kill()
        # no sweep involved: the template stops its whole tree when its parent dies
        assert wait_for(lambda: not any(alive(p) for p in pids))
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]


def marked(marker: str) -> list[psutil.Process]:
    """Live processes whose pool marker is ``marker``."""
    out = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("DSPEX_POOL_PARENT") == marker and proc.status() != "zombie":
                out.append(proc)
        except (psutil.Error, OSError):
            continue
    return out


def kill_cycles(make_pool: Callable[..., Pool], cycles: int) -> None:
    """``cycles`` times: a worker starts a setsid grandchild and is SIGKILLed. Afterwards no
    zombie, no orphan, and the other pool's processes are the same ones."""
    other = make_pool(name="bystander", size=2)
    other.start_sync()
    bystanders = {*other.stats()["pids"], other.call_sync("setsid_grandchild")}
    pool = make_pool(name="victim", size=1)
    pool.start_sync()
    me = psutil.Process()
    for _ in range(cycles):
        pid = pool.call_sync("pid")
        pool.call_sync("setsid_grandchild")
        os.kill(pid, signal.SIGKILL)
        assert wait_for(lambda p=pid: p not in pool.stats()["pids"] and pool.stats()["idle"] == 1)
    template = pool._spawner.proc.pid  # type: ignore[union-attr]
    workers = set(pool.stats()["pids"])

    def settled() -> bool:
        below = psutil.Process(template).children(recursive=True)
        zombies = [p for p in me.children(recursive=True) if p.status() == "zombie"]
        return {p.pid for p in below} == workers and not zombies

    assert wait_for(settled), (
        [(p.pid, p.name(), p.status()) for p in psutil.Process(template).children(True)],
        [(p.pid, p.name()) for p in me.children(recursive=True) if p.status() == "zombie"],
        workers,
    )
    assert all(alive(p) for p in bystanders)  # no process of another pool touched
    assert set(other.stats()["pids"]) | {max(bystanders)} >= bystanders


def test_kill_cycles_small(make_pool: Callable[..., Pool]) -> None:
    kill_cycles(make_pool, 10)


@pytest.mark.slow
def test_200_kill_cycles(make_pool: Callable[..., Pool]) -> None:
    kill_cycles(make_pool, 200)
