"""The pool's own I/O thread: an event loop every supervision and socket callback runs on.

A pool is not bound to the caller's loop: callers on any thread (or loop) hand work to this
thread with :meth:`LoopThread.schedule` / :meth:`LoopThread.run`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any

from dspex.errors import PoolClosed

__all__ = ["SETTLE_TASK_NAME", "LoopThread"]

SETTLE_TASK_NAME = "dspex-pool-settle"
"""Tasks with this name (e.g. a killed process's reaper) finish before the loop closes."""


async def _settle() -> None:
    """Wait for this loop's must-finish tasks (each bounds itself), so closing the loop never
    destroys one while it is pending."""
    pending = [t for t in asyncio.all_tasks() if t.get_name() == SETTLE_TASK_NAME]
    if pending:
        await asyncio.wait(pending, timeout=10)


class LoopThread:
    """A lazily started daemon thread running one event loop, plus a small I/O executor."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.ident: int | None = None  # the pool thread's ``threading.get_ident()``
        self.executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def closed_error(self) -> PoolClosed:
        return PoolClosed(f"pool {self.name!r} is closed", pool=self.name)

    def on_thread(self) -> bool:
        return threading.get_ident() == self.ident

    def ensure(self, refuse: Callable[[], bool]) -> asyncio.AbstractEventLoop:
        """The running loop, started on first use (``PoolClosed`` if ``refuse()`` or stopped)."""
        loop = self.loop
        if loop is not None and not loop.is_closed():
            return loop
        if loop is not None:
            raise self.closed_error()
        with self._lock:
            if self.loop is None:
                if refuse():
                    raise self.closed_error()
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def run() -> None:
                    self.ident = threading.get_ident()
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    try:
                        loop.run_forever()
                    finally:
                        self.ident = None  # (a later thread may get the same ident)

                self.executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=4, thread_name_prefix=f"dspex-pool-{self.name}-io"
                )
                self.thread = threading.Thread(
                    target=run, name=f"dspex-pool-{self.name}", daemon=True
                )
                self.thread.start()
                ready.wait()
                self.loop = loop
            return self.loop

    def schedule(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` on the pool thread (``PoolClosed`` once the loop is gone)."""
        loop = self.loop
        if loop is None:
            raise self.closed_error()
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed
            raise self.closed_error() from None

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the pool thread and wait for it (it must be quick)."""
        if self.on_thread():
            return fn(*args)
        cf: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def run() -> None:
            try:
                cf.set_result(fn(*args))
            except BaseException as exc:
                cf.set_exception(exc)

        self.schedule(run)
        return cf.result()

    def stop(self) -> None:
        loop, thread = self.loop, self.thread
        if loop is None or thread is None or thread is threading.current_thread():
            return
        if loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(_settle(), loop).result(timeout=11)
            except (RuntimeError, concurrent.futures.TimeoutError):  # closed meanwhile, or stuck
                pass
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        if not loop.is_running():
            loop.close()
        if self.executor is not None:
            self.executor.shutdown(wait=False)
