"""The pool's state records: a worker, a request, and how a request's outcome reaches its caller.

Everything here is plain data touched only on the pool's own thread (a request's outcome is
handed to the caller's loop or ``concurrent.futures.Future`` by :meth:`Req.resolve`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from dspex.pool.protocol import InitFailed
    from dspex.pool.session import _SessionState

__all__ = ["DEFAULT", "PoolState", "Req", "ReqState", "Worker", "WorkerState"]


class _Default:
    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Any = _Default()
"""Sentinel: use the pool's configured value (e.g. ``timeout=DEFAULT``)."""

WorkerState = Literal["starting", "idle", "busy", "stopping", "dead"]
PoolState = Literal["new", "running", "unhealthy", "closing", "closed"]
ReqState = Literal["new", "queued", "running", "finished"]

_ids = itertools.count(1)


class Worker:
    """One worker process as the pool thread sees it."""

    __slots__ = (
        "cancel_timer",
        "exit_reason",
        "init_error",
        "limit_hit",
        "pid",
        "pidfd",
        "recycle_due",
        "req",
        "requests_done",
        "sessions",
        "spawned_at",
        "start_timer",
        "state",
        "transport",
        "wid",
    )

    def __init__(self, wid: int, now: float) -> None:
        self.wid = wid
        self.pid = 0
        self.pidfd = -1
        self.state: WorkerState = "starting"
        self.transport: asyncio.Transport | None = None
        self.req: Req | None = None
        self.requests_done = 0
        self.spawned_at = now
        self.sessions: set[str] = set()
        self.start_timer: asyncio.TimerHandle | None = None
        self.cancel_timer: asyncio.TimerHandle | None = None
        self.exit_reason: str | None = None  # planned exits: recycle, shutdown, timeout, limit...
        self.limit_hit: tuple[str, float] | None = None
        self.recycle_due = False
        self.init_error: InitFailed | None = None

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


class Req:
    """One call from submission to its single terminal outcome."""

    __slots__ = (
        "args_bytes",
        "attempts",
        "caller_loop",
        "cfut",
        "deadline",
        "done",
        "fut",
        "id",
        "idempotent",
        "items_sent",
        "method",
        "on_item",
        "queue_deadline",
        "session",
        "started",
        "state",
        "stream",
        "submitted",
        "timer",
        "worker",
    )

    def __init__(
        self,
        method: str,
        args_bytes: bytes,
        *,
        session: _SessionState | None,
        idempotent: bool,
        stream: int,
        timeout: float | None,
    ) -> None:
        self.id = next(_ids)
        self.method = method
        self.args_bytes = args_bytes
        self.session = session
        self.idempotent = idempotent
        self.stream = stream
        self.deadline: float | None = timeout  # relative until submitted
        self.queue_deadline: float | None = None
        self.attempts = 0
        self.state: ReqState = "new"
        self.done = False
        self.worker: Worker | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.submitted = 0.0
        self.started = 0.0
        self.items_sent = 0
        self.caller_loop: asyncio.AbstractEventLoop | None = None
        self.fut: asyncio.Future[Any] | None = None
        self.cfut: concurrent.futures.Future[Any] | None = None
        self.on_item: Callable[[Any], None] | None = None

    def resolve(self, ok: bool, value: Any) -> bool:
        """Deliver the outcome to the caller (once). Returns whether this call delivered it."""
        if self.done:
            return False
        self.done = True
        if self.cfut is not None:
            if not self.cfut.done():
                if isinstance(value, asyncio.CancelledError):
                    self.cfut.cancel()
                elif ok:
                    self.cfut.set_result(value)
                else:
                    self.cfut.set_exception(value)
        elif self.fut is not None and self.caller_loop is not None:
            try:
                self.caller_loop.call_soon_threadsafe(_deliver, self.fut, ok, value)
            except RuntimeError:  # the caller's loop is closed: nobody is waiting
                pass
        return True


def _deliver(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.done():
        return
    if ok:
        fut.set_result(value)
    elif isinstance(value, asyncio.CancelledError):
        fut.cancel()
    else:
        fut.set_exception(value)
