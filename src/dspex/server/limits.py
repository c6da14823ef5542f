"""Admission control: a bounded number of calls at once, a bounded queue, and draining.

A call takes a slot (``max_concurrency`` of them); when none is free it waits in a queue of
at most ``max_queue`` callers, for as long as its own deadline allows. A full queue refuses
at once with :class:`~dspex.errors.ServerSaturated` (HTTP 429 + Retry-After). After
:meth:`Limiter.start_draining` new calls get :class:`~dspex.errors.ServerDraining` (503)
while calls already admitted finish; :meth:`Limiter.wait_idle` returns when none is left.
"""

from __future__ import annotations

import asyncio

from dspex.errors import ConfigurationError, ServerDraining, ServerSaturated

__all__ = ["Limiter"]


class Limiter:
    """Slots and a queue for one server (all state lives on the server's event loop)."""

    def __init__(self, max_concurrency: int = 64, max_queue: int = 256) -> None:
        if not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise ConfigurationError(f"max_concurrency must be >= 1, got {max_concurrency!r}")
        if not isinstance(max_queue, int) or max_queue < 0:
            raise ConfigurationError(f"max_queue must be >= 0, got {max_queue!r}")
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.in_flight = 0
        self.waiting = 0
        self.draining = False
        self._free = max_concurrency
        self._waiters: asyncio.Queue[asyncio.Future[None]] | None = None
        self._idle: asyncio.Event | None = None

    def _queue(self) -> asyncio.Queue[asyncio.Future[None]]:
        if self._waiters is None:
            self._waiters = asyncio.Queue()
        return self._waiters

    def _idle_event(self) -> asyncio.Event:
        if self._idle is None:
            self._idle = asyncio.Event()
            if self.in_flight == 0 and self.waiting == 0:
                self._idle.set()
        return self._idle

    def try_acquire(self, program: str | None = None) -> bool:
        """Take a free slot now if there is one (``False``: the caller must wait)."""
        if self.draining:
            raise ServerDraining(
                "the server is shutting down; retry on another instance",
                program=program,
                retry_after=1,
            )
        if self._free > 0:
            self._free -= 1
            self._admitted()
            return True
        return False

    async def acquire(self, program: str | None = None) -> None:
        """Take a slot (waiting in the queue if needed); raise if refused."""
        if self.try_acquire(program):
            return
        if self.waiting >= self.max_queue:
            raise ServerSaturated(
                f"all {self.max_concurrency} call slots and {self.max_queue} queue places are "
                "taken",
                program=program,
                retry_after=1,
            )
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue().put_nowait(waiter)
        self.waiting += 1
        self._idle_event().clear()
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._hand_on()  # we were given a slot but are leaving: pass it on
            else:
                waiter.cancel()
            raise
        finally:
            self.waiting -= 1
            self._maybe_idle()
        self._admitted()

    def _admitted(self) -> None:
        self.in_flight += 1
        self._idle_event().clear()

    def release(self) -> None:
        """Give back the slot taken by :meth:`acquire`."""
        self.in_flight -= 1
        self._hand_on()
        self._maybe_idle()

    def _hand_on(self) -> None:
        queue = self._queue()
        while not queue.empty():
            waiter = queue.get_nowait()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1

    def _maybe_idle(self) -> None:
        if self.in_flight == 0 and self.waiting == 0:
            self._idle_event().set()

    def start_draining(self) -> None:
        """Refuse new calls from now on; calls already admitted or queued go on."""
        self.draining = True

    async def wait_idle(self) -> None:
        """Return once no call is running or queued."""
        await self._idle_event().wait()

    def stats(self) -> dict[str, int | bool]:
        return {
            "in_flight": self.in_flight,
            "queued": self.waiting,
            "max_concurrency": self.max_concurrency,
            "max_queue": self.max_queue,
            "draining": self.draining,
        }
