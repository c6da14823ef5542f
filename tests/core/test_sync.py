from __future__ import annotations

import asyncio
import threading

from dspex._sync import run_sync


async def _loop_id() -> int:
    return id(asyncio.get_running_loop())


def test_run_sync_reuses_one_loop_per_thread() -> None:
    assert run_sync(_loop_id()) == run_sync(_loop_id())
    other: list[int] = []
    t = threading.Thread(target=lambda: other.append(run_sync(_loop_id())))
    t.start()
    t.join()
    assert other[0] != run_sync(_loop_id())


def test_run_sync_inside_a_running_loop_uses_a_helper_thread() -> None:
    async def outer() -> int:
        return run_sync(_loop_id())

    inner = asyncio.run(outer())
    assert isinstance(inner, int)
