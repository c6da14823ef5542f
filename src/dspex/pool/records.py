"""The pool's state records: a worker, a request, and how a request's outcome reaches its caller.

Everything here is plain data touched only on the pool's own thread (a request's outcome is
handed to the caller's loop or to a sync caller's :class:`SyncWaiter` by :meth:`Req.resolve`).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import itertools
import select
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from dspex.pool.protocol import InitFailed
    from dspex.pool.session import _SessionState
    from dspex.pool.supervisor import WorkerProtocol

__all__ = [
    "DEFAULT",
    "Mailbox",
    "PoolState",
    "Req",
    "ReqState",
    "SyncWaiter",
    "Worker",
    "WorkerState",
]


class _Default:
    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Any = _Default()
"""Sentinel: use the pool's configured value (e.g. ``timeout=DEFAULT``)."""

WorkerState = Literal["starting", "idle", "busy", "stopping", "dead"]
PoolState = Literal["new", "running", "unhealthy", "closing", "closed"]
ReqState = Literal["new", "queued", "pipelined", "running", "finished"]
"""``pipelined``: its Call frame waits in a busy worker's socket behind the running call."""

_ids = itertools.count(1)


class Worker:
    """One worker process as the pool thread sees it."""

    __slots__ = (
        "backlog",
        "cancel_timer",
        "drops",
        "exit_reason",
        "exit_seen",
        "init_error",
        "leased",
        "limit_hit",
        "outbox",
        "pid",
        "pidfd",
        "poller",
        "protocol",
        "recycle_due",
        "req",
        "requests_done",
        "sessions",
        "sock",
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
        self.sock: socket.socket | None = None  # the transport's socket (for direct calls)
        self.poller: select.poll | None = None  # a direct caller's wait on ``sock``
        self.protocol: WorkerProtocol | None = None
        self.leased = False  # parked for, or held by, a sync caller (see dspex.pool.direct)
        self.exit_seen = False  # the process is known to have exited
        self.drops: list[str] = []  # sessions closed while a sync caller held the worker
        self.req: Req | None = None  # the call it runs (the oldest it was sent)
        self.backlog: collections.deque[Req] = collections.deque()  # sent behind it (pipelined)
        self.requests_done = 0
        self.spawned_at = now
        self.sessions: set[str] = set()
        self.start_timer: asyncio.TimerHandle | None = None
        self.cancel_timer: asyncio.TimerHandle | None = None
        self.exit_reason: str | None = None  # planned exits: recycle, shutdown, timeout, limit...
        self.limit_hit: tuple[str, float] | None = None
        self.recycle_due = False
        self.init_error: InitFailed | None = None
        self.outbox: list[tuple[bytes, Req]] = []  # Call frames written together (flush)

    def send(self, data: bytes) -> None:
        """Write ``data`` now (after any Call frames still held in the outbox: order holds)."""
        if self.outbox:
            self.flush()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def flush(self) -> None:
        """Write the held Call frames in one write; a call whose frame could not be written
        to a live worker is marked undelivered (it never ran: safe to run elsewhere)."""
        out = self.outbox
        if not out:
            return
        self.outbox = []
        t = self.transport
        if t is not None and not t.is_closing():
            t.write(out[0][0] if len(out) == 1 else b"".join(frame for frame, _ in out))
            if not t.is_closing():
                return
        for _, req in out:  # the write failed (EPIPE): the worker is gone
            if req.worker is self and req.state in ("running", "pipelined"):
                req.undelivered = True


class Req:
    """One call from submission to its single terminal outcome."""

    __slots__ = (
        "args_bytes",
        "attempts",
        "caller_loop",
        "deadline",
        "done",
        "fut",
        "id",
        "idempotent",
        "items_sent",
        "mailbox",
        "method",
        "on_item",
        "queue_deadline",
        "session",
        "started",
        "state",
        "stream",
        "submitted",
        "undelivered",
        "waiter",
        "worker",
    )

    def __init__(  # (positional: keyword arguments cost a dict per call here)
        self,
        method: str,
        args_bytes: bytes,
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
        self.submitted = 0.0
        self.started = 0.0
        self.items_sent = 0
        self.undelivered = False  # its Call frame never reached a live worker: safe to re-run
        self.caller_loop: asyncio.AbstractEventLoop | None = None
        self.fut: asyncio.Future[Any] | None = None
        self.mailbox: Mailbox | None = None
        self.waiter: SyncWaiter | None = None
        self.on_item: Callable[[Any], None] | None = None

    def resolve(self, ok: bool, value: Any) -> bool:
        """Deliver the outcome to the caller (once). Returns whether this call delivered it."""
        if self.done:
            return False
        self.done = True
        if self.waiter is not None:  # (a direct call's caller thread may race the pool thread)
            return self.waiter.set(ok, value)
        if self.fut is not None and self.mailbox is not None:
            self.mailbox.post(self.fut, ok, value)
        elif self.fut is not None and self.caller_loop is not None:
            try:
                self.caller_loop.call_soon_threadsafe(_deliver, self.fut, ok, value)
            except RuntimeError:  # the caller's loop is closed: nobody is waiting
                pass
        return True


class SyncWaiter:
    """Where a sync caller waits for its call's one outcome (a light ``Future``).

    :meth:`set` is a test-and-set: of the pool thread and a direct caller racing to settle
    the same call, exactly one wins and its outcome is the one :meth:`result` returns. The
    first ``list.append`` to ``_outcome`` wins (an append is atomic); a lock to sleep on is
    made only when :meth:`result` finds no outcome yet, so a direct caller that settles its
    own call (the usual case) takes no lock at all.
    """

    __slots__ = ("_outcome", "_ready")

    def __init__(self) -> None:
        self._outcome: list[tuple[bool, Any]] = []
        self._ready: threading.Lock | None = None

    def set(self, ok: bool, value: Any) -> bool:
        """Settle with this outcome; False if it was settled already."""
        outcome = self._outcome
        mine = (ok, value)
        outcome.append(mine)
        if outcome[0] is not mine:
            return False
        ready = self._ready  # (read after the append: see result())
        if ready is not None:
            ready.release()
        return True

    def settle(self, ok: bool, value: Any) -> Any:
        """:meth:`set`, then :meth:`result` (a direct caller settling its own call)."""
        if self.set(ok, value) and ok:
            return value
        return self.result()  # an error to raise, or the outcome settled before ours

    def result(self) -> Any:
        """Wait for the outcome (interruptible); return the value or raise the error (a
        cancellation raises ``concurrent.futures.CancelledError``, as a cancelled future)."""
        outcome = self._outcome
        if not outcome:
            ready = self._ready
            if ready is None:
                ready = threading.Lock()
                ready.acquire()
                self._ready = ready  # published before looking again: a setter that
            if not outcome:  # appended after our look releases this lock
                ready.acquire()
                ready.release()  # (a second result() returns at once)
        ok, value = outcome[0]
        if ok:
            return value
        if isinstance(value, asyncio.CancelledError):
            raise concurrent.futures.CancelledError()
        raise value


def _deliver(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.done():
        return
    if ok:
        fut.set_result(value)
    elif isinstance(value, asyncio.CancelledError):
        fut.cancel()
    else:
        fut.set_exception(value)


class Mailbox:
    """Outcomes the pool thread hands to one caller loop, delivered in batches.

    One ``call_soon_threadsafe`` (one wake-up of the caller's loop) per batch instead of per
    call: under load many results ride one wake-up. Only the pool thread posts.
    """

    __slots__ = ("armed", "items", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.items: collections.deque[tuple[asyncio.Future[Any], bool, Any]] = collections.deque()
        self.armed = False

    def post(self, fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
        self.items.append((fut, ok, value))
        if not self.armed:
            self.armed = True
            try:
                self.loop.call_soon_threadsafe(self.flush)
            except RuntimeError:  # the caller's loop is closed: nobody is waiting
                self.armed = False
                self.items.clear()

    def flush(self) -> None:
        self.armed = False
        items = self.items
        while items:
            _deliver(*items.popleft())
