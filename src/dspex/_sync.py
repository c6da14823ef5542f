"""Run async code from sync callers without creating an event loop per call.

Each thread keeps one event loop for sync entry points and reuses it, so connection pools
bound to that loop stay warm across calls. That loop is uvloop's when uvloop is installed (as
uvicorn's ``--loop auto`` picks it), else asyncio's; ``DSPEX_EVENT_LOOP=asyncio`` forces asyncio's.
On uvloop each request an LM call sends costs the loop about half the CPU (epoll, futures and
task wake-ups in C), which is what a sync ``Evaluate`` or ``batch`` spends most of its loop
time on. Called from inside a running loop (a sync API used
in async code, e.g. a notebook), the coroutine runs on a fresh loop in a private helper
thread instead of failing or re-entering the running loop.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import os
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["on_loop_shutdown", "run_sync"]

T = TypeVar("T")

_local = threading.local()
_helper: ThreadPoolExecutor | None = None
_helper_lock = threading.Lock()


def new_loop() -> asyncio.AbstractEventLoop:
    """A new event loop for a thread's sync entry points: uvloop's when it is installed and
    ``DSPEX_EVENT_LOOP`` is not ``asyncio``, else asyncio's default."""
    if os.environ.get("DSPEX_EVENT_LOOP", "auto").lower() != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
            return loop
    return asyncio.new_event_loop()


class _LoopHolder:
    """Owns a thread's loop; closes it when the thread (and so its thread-local) goes away."""

    __slots__ = ("loop",)

    def __init__(self) -> None:
        self.loop = new_loop()

    def close(self) -> None:
        loop = self.loop
        if loop.is_closed() or loop.is_running():
            return
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    def __del__(self) -> None:
        self.close()


_holders: list[_LoopHolder] = []


def _thread_loop() -> asyncio.AbstractEventLoop:
    holder: _LoopHolder | None = getattr(_local, "holder", None)
    if holder is None or holder.loop.is_closed():
        holder = _LoopHolder()
        _local.holder = holder
        if threading.current_thread() is threading.main_thread():
            _holders.append(holder)  # closed at interpreter exit
    return holder.loop


@atexit.register
def _close_main_loops() -> None:
    for holder in _holders:
        holder.close()
    _holders.clear()


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
    # the caller's contextvars (dspex.context(lm=...)) go with the coroutine, as in to_thread.
    # A fresh loop per call (asyncio.run): a long-lived helper loop sleeps between calls, so
    # connections it keeps could go stale unnoticed and hang the next call (seen in the suite).
    context = contextvars.copy_context()
    return _helper.submit(context.run, asyncio.run, coro).result()


async def _shutdown_guard(callback: Callable[[], Awaitable[None]]) -> AsyncIterator[None]:
    try:
        yield
    finally:
        await callback()


_guards: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[AsyncIterator[None]]] = (
    weakref.WeakKeyDictionary()
)


async def on_loop_shutdown(callback: Callable[[], Awaitable[None]]) -> None:
    """Run ``callback`` on the current loop when it shuts down.

    Every well-behaved loop owner (``asyncio.run``, pytest-asyncio, ``run_sync``'s loops)
    calls ``loop.shutdown_asyncgens()`` before closing the loop; a suspended async generator
    registered here is finalized then, on that loop, so connection pools bound to the loop
    close cleanly instead of leaking sockets.
    """
    loop = asyncio.get_running_loop()
    guard = _shutdown_guard(callback)
    await guard.__anext__()
    _guards.setdefault(loop, []).append(guard)  # strong ref while the loop lives
