"""``asyncify``: call a program from async code without blocking the event loop."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from dspex import settings

__all__ = ["AsyncLimiter", "asyncify", "get_limiter"]


class AsyncLimiter:
    """A capacity limiter shared by every event loop and thread: at most ``total_tokens``
    holders at once (``async with limiter:``). Raising ``total_tokens`` admits waiters at once;
    lowering it lets holders finish and admits no one until the count is under it."""

    def __init__(self, total_tokens: int) -> None:
        self._lock = threading.Lock()
        self._total = max(1, total_tokens)
        self._borrowed = 0
        self._waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = deque()

    @property
    def total_tokens(self) -> int:
        return self._total

    @total_tokens.setter
    def total_tokens(self, value: int) -> None:
        with self._lock:
            self._total = max(1, value)
            self._admit()

    @property
    def borrowed_tokens(self) -> int:
        return self._borrowed

    async def __aenter__(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._borrowed < self._total and not self._waiters:
                self._borrowed += 1
                return
            future: asyncio.Future[None] = loop.create_future()
            self._waiters.append((loop, future))
        try:
            await future
        except asyncio.CancelledError:
            with self._lock:
                if future.done() and not future.cancelled():  # admitted as it was cancelled
                    self._borrowed -= 1
                    self._admit()
                else:
                    self._waiters = deque(w for w in self._waiters if w[1] is not future)
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self._lock:
            self._borrowed -= 1
            self._admit()

    def _admit(self) -> None:
        """Hand free tokens to waiters, oldest first (the lock is held)."""
        while self._waiters and self._borrowed < self._total:
            loop, future = self._waiters.popleft()
            if future.cancelled() or loop.is_closed():
                continue
            self._borrowed += 1
            loop.call_soon_threadsafe(_admit_one, future)


def _admit_one(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


_limiter: AsyncLimiter | None = None
_limiter_lock = threading.Lock()


def get_limiter() -> AsyncLimiter:
    """The one limiter of sync programs run in threads by :func:`asyncify`; its capacity is
    the current ``settings.async_max_workers`` (as DSPy's singleton)."""
    global _limiter
    size = settings.current().async_max_workers
    with _limiter_lock:
        if _limiter is None:
            _limiter = AsyncLimiter(size)
        elif _limiter.total_tokens != size:
            _limiter.total_tokens = size
        return _limiter


def asyncify(program: Any) -> Callable[..., Awaitable[Any]]:
    """An async function running ``program``: a module through its ``acall`` (native async
    when it has ``aforward``; a sync ``forward`` runs in a worker thread), any other callable
    in a worker thread. Threads are bounded by ``settings.async_max_workers``; the caller's
    settings context (``dspex.context``) applies inside.
    """
    from dspex.primitives.module import Module

    if isinstance(program, Module) and type(program).__call__.__module__.startswith("dspex."):
        return program.acall  # a module called the usual way: its native async path

    async def run(*args: Any, **kwargs: Any) -> Any:
        async with get_limiter():
            return await in_worker_thread(functools.partial(program, *args, **kwargs))

    return run


async def in_worker_thread(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a worker thread with the caller's context. With ``anyio`` installed the
    thread is an anyio worker, as DSPy's asyncify uses, so the program may call back into the
    loop with ``anyio.from_thread.run(...)``; otherwise ``asyncio.to_thread``. The threads are
    bounded by :func:`get_limiter`, not by anyio's default limiter."""
    try:
        import anyio.to_thread
    except ImportError:
        return await asyncio.to_thread(fn)
    default = anyio.to_thread.current_default_thread_limiter()
    wanted = get_limiter().total_tokens
    if default.total_tokens < wanted:
        default.total_tokens = wanted
    return await anyio.to_thread.run_sync(fn)
