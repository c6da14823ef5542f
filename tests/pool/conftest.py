"""Pool test fixtures: pools that always end, and a guard that no process is left behind."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from dspex.pool import Pool

HERE = str(Path(__file__).resolve().parent)
TARGET = "handlers:make"


def leftover_processes(timeout: float = 5.0) -> list[psutil.Process]:
    """Descendants of this test process still alive (zombies count) after ``timeout``."""
    me = psutil.Process()
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for child in me.children(recursive=True):
            try:
                if child.status() == psutil.STATUS_ZOMBIE or child.is_running():
                    alive.append(child)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def marked_processes() -> list[psutil.Process]:
    """Any process (not only our children) carrying this test process's pool marker."""
    me = os.getpid()
    found = []
    for proc in psutil.process_iter():
        try:
            marker = proc.environ().get("DSPEX_POOL_PARENT", "")
        except (psutil.Error, OSError):
            continue
        if marker.startswith(f"{me}:") and proc.status() != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


@pytest.fixture
def make_pool() -> Iterator[Callable[..., Pool]]:
    pools: list[Pool] = []

    def make(**options: Any) -> Pool:
        options.setdefault("target", TARGET)
        options.setdefault("size", 2)
        options.setdefault("pythonpath", (HERE,))
        options.setdefault("request_timeout", 20.0)
        options.setdefault("kill_grace", 0.5)
        pool = Pool(name=options.pop("name", "test"), **options)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.close_sync(cancel=True)


@pytest.fixture(autouse=True)
def _no_processes_left_behind() -> Iterator[None]:
    yield
    left = leftover_processes()
    assert not left, f"processes left behind: {[(p.pid, p.name()) for p in left]}"


@pytest.fixture
async def pool(make_pool: Callable[..., Pool]) -> Pool:
    p = make_pool()
    await p.start()
    return p
