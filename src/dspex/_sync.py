"""Run async code from sync callers without creating an event loop per call.

Each thread keeps one event loop for sync entry points and reuses it, so connection pools
bound to that loop stay warm across calls. Called from inside a running loop (a sync API used
in async code, e.g. a notebook), the coroutine runs on a private helper thread's loop instead
of failing or re-entering the running loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["run_sync"]

T = TypeVar("T")

_local = threading.local()
_helper: ThreadPoolExecutor | None = None
_helper_lock = threading.Lock()


def _thread_loop() -> asyncio.AbstractEventLoop:
    loop: asyncio.AbstractEventLoop | None = getattr(_local, "loop", None)
    if loop is None or loop.is_closed():
        loop = asyncio.new_event_loop()
        _local.loop = loop
    return loop


def _run_here(coro: Coroutine[Any, Any, T]) -> T:
    return _thread_loop().run_until_complete(coro)


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion and return its result, from synchronous code."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _run_here(coro)
    global _helper
    with _helper_lock:
        if _helper is None:
            _helper = ThreadPoolExecutor(max_workers=8, thread_name_prefix="dspex-sync")
    return _helper.submit(_run_here, coro).result()
