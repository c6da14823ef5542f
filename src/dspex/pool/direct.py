"""The sync fast path: a caller thread talks to an idle worker's socket itself.

The classic path costs two thread hops per call (caller -> pool thread -> caller). When a
sync caller finds a *parked* worker (idle, its socket not watched by the pool thread), it
takes it (``list.pop``/``list.remove`` are atomic), writes the ``Call`` frame and waits for
the reply on the socket directly, then puts the worker back. Workers holding sessions are
parked apart (``_parked_pinned``): only their sessions' own calls take them directly. Anything unusual — a callback
request, the worker's death, the deadline, the caller being interrupted, a recycle due —
*adopts* the call into the pool thread, which then finishes it exactly as if it had been
dispatched there (retries, typed errors, kills). Supervision never leaves the pool thread.

Ownership: a worker is *leased* (``Worker.leased``) from the moment the pool thread parks it
until the pool thread takes it back (:meth:`DirectPath._reclaim`, ``_adopt``,
``_return_lease``). While a caller holds it, the pool thread only signals it (kill) or flags it.
"""

from __future__ import annotations

import asyncio
import select
import socket
import time
from typing import Any

from dspex import telemetry
from dspex.errors import DSPexError, ProtocolError
from dspex.pool.core import PoolCore
from dspex.pool.protocol import (
    DropSession,
    Error,
    FrameBuffer,
    Message,
    Result,
    call_frame,
    decode,
    is_lone_frame,
)
from dspex.pool.records import Req, Worker

__all__ = ["NOT_TAKEN", "DirectPath"]

NOT_TAKEN: Any = object()
"""Returned by :meth:`DirectPath._call_direct` when no parked worker was free."""

_SLICE_MS = 100  # how often a waiting caller looks at flags the pool thread may have set
_SLICE = _SLICE_MS / 1000
_RECV = 1 << 18
_monotonic = time.monotonic


class DirectPath(PoolCore):
    """Mixin: parking idle workers for sync callers, and the caller side of a direct call."""

    # ------------------------------------------------------------------ pool thread

    def _make_idle(self, w: Worker) -> None:
        """``w`` is free: park it for sync callers, or keep it for the pool thread."""
        w.state = "idle"
        t = w.transport
        if (
            self._want_direct
            and not self._queue
            and t is not None
            and not t.is_closing()
            and t.get_write_buffer_size() == 0
            and w.sock is not None
        ):
            t.pause_reading()
            w.leased = True
            (self._parked_pinned if w.sessions else self._parked).append(w)
            return
        self._idle[w] = None

    def _park_idle(self) -> None:
        """Sync callers showed up: park every idle worker they may use."""
        for w in list(self._idle):
            del self._idle[w]
            self._make_idle(w)

    def _reclaim(self, w: Worker) -> bool:
        """Take ``w`` back from the parked list; False if a caller holds it right now."""
        if not w.leased:
            return True
        try:
            self._parked.remove(w)
        except ValueError:
            try:
                self._parked_pinned.remove(w)
            except ValueError:
                return False
        w.leased = False
        t = w.transport
        if t is not None and not t.is_closing():
            t.resume_reading()
        return True

    def _unpark_one(self) -> bool:
        """Move one parked worker to the pool thread's idle set (for async or queued calls)."""
        while self._parked or self._parked_pinned:
            try:
                w = (self._parked or self._parked_pinned).pop()
            except IndexError:
                continue
            w.leased = False
            t = w.transport
            if t is None or t.is_closing() or w.state != "idle":
                continue
            t.resume_reading()
            self._idle[w] = None
            return True
        return False

    def _send_drops(self, w: Worker) -> None:
        while w.drops:
            w.send(self._codec.frame(DropSession("drop_session", w.drops.pop())))

    def _adopt(self, w: Worker, req: Req, pending: list[Message], rest: bytes) -> None:
        """A caller hands its direct call over: finish it here like any dispatched call."""
        w.leased = False
        if w.state == "idle":  # (defensive) a caller always marks its worker busy
            w.state = "busy"
        w.req = req
        req.worker = w
        req.state = "running"
        if req.deadline is not None:
            self._watch(req.deadline)
        proto = w.protocol
        if proto is not None and rest:
            proto.buf.feed(rest)
        t = w.transport
        if t is not None and not t.is_closing():
            t.resume_reading()
        self._send_drops(w)
        for msg in pending:
            self._on_message(w, msg)
        if w.exit_seen and w.state != "dead":
            self._on_worker_lost(w)

    def _return_lease(self, w: Worker) -> None:
        """A caller finished its call but the worker needs the pool thread (recycle, close)."""
        w.leased = False
        t = w.transport
        if t is not None and not t.is_closing():
            t.resume_reading()
        self._send_drops(w)
        if w.exit_seen:
            self._on_worker_lost(w)
            return
        self._checkin(w)

    # ------------------------------------------------------------------ caller thread

    def _take_direct(self, req: Req) -> Worker | None:
        """A parked worker for ``req`` (its session's own one for a session call), taken from
        the parked lists; ``None`` if there is none to take."""
        if self._state != "running" or telemetry.has_handlers():  # events: the classic path
            return None
        sess = req.session
        if sess is None:
            try:
                w = self._parked.pop()
            except IndexError:
                return None
        else:  # a session runs on its own worker, if that one is parked
            pinned = sess.worker
            if pinned is None or sess.lost or sess.closed:
                return None
            try:
                self._parked_pinned.remove(pinned)
            except ValueError:
                return None
            w = pinned
        if w.state != "idle" or w.exit_seen or w.sock is None:  # changed while parked: give back
            self._io.schedule(self._return_idle, w)
            return None
        return w

    def _start_direct(self, req: Req, w: Worker) -> tuple[bytes, float]:
        """Mark ``req`` running on ``w`` (taken by this caller); its Call frame and start time."""
        now = _monotonic()
        req.submitted = req.started = now
        timeout = req.deadline  # (relative until now)
        if timeout is not None:
            req.deadline = now + timeout
        req.state = "running"
        req.worker = w
        w.req = req
        w.state = "busy"
        sess = req.session
        frame = call_frame(
            req.id, req.method, req.args_bytes, timeout, None if sess is None else sess.id, 0
        )
        return frame, now

    def _end_direct(self, w: Worker, req: Req, reply: list[Any], started: float) -> None:
        """A direct call got its reply: count it, and park ``w`` again (or hand it back)."""
        w.req = None
        req.state = "finished"
        w.requests_done += 1
        self._latencies.append(_monotonic() - started)
        next(self._direct_calls)  # (atomic, unlike ``+=``: see stats.snapshot)
        if reply[0] != "result":
            with self._direct_lock:
                self._counts["failures"] += 1
        if (
            self._state == "running"
            and not self._queue  # calls wait in the queue: they go first (pool thread)
            and w.state == "busy"
            and not w.exit_seen
            and w.limit_hit is None
            and not w.drops
            and not w.recycle_due
            and (not self._ages or self._recycle_reason(w) is None)
        ):
            w.state = "idle"
            (self._parked_pinned if w.sessions else self._parked).append(w)
        else:
            self._io.schedule(self._return_lease, w)

    def _lone_reply(self, req: Req, data: bytes, pending: list[Message]) -> list[Any] | None:
        """The reply if ``data`` is one whole frame answering ``req`` (the usual); any other
        whole frame goes to ``pending``. ``None`` also when ``data`` is not one whole frame."""
        if not is_lone_frame(data):
            return None
        raw = self._codec.loads(data[4:])
        if type(raw) is list:
            size = len(raw)
            if size == 3 and raw[0] == "result" and raw[1] == req.id:
                return raw
            if size == 8 and raw[0] == "error" and raw[1] == req.id and raw[5] is None:
                return raw  # (a plain error: a resource limit is the pool's)
        pending.append(decode(raw))
        return None

    def _call_direct(self, req: Req) -> Any:
        """Run ``req`` on a parked worker from this thread: its reply (a decoded Result or
        plain Error array), or ``NOT_TAKEN`` if no parked worker was free or the pool thread
        took the call over (it settles the call then)."""
        w = self._take_direct(req)
        if w is None:
            return NOT_TAKEN
        sock = w.sock
        assert sock is not None
        frame, now = self._start_direct(req, w)
        timeout = None if req.deadline is None else req.deadline - now
        pending: list[Message] = []
        buf: FrameBuffer | None = None
        reply: list[Any] | None = None  # the reply, a decoded Result or plain Error array
        try:
            if not _send(sock, frame):
                req.undelivered = True  # (a partial frame is never run either)
            else:
                poller = w.poller  # (registered for POLLIN once: only the lease holder polls)
                if poller is None:
                    poller = w.poller = select.poll()
                    poller.register(sock.fileno(), select.POLLIN)
                data = b""
                if poller.poll(_SLICE_MS if timeout is None or timeout >= _SLICE else 0):
                    try:
                        data = sock.recv(_RECV)
                    except BlockingIOError:
                        pass
                reply = self._lone_reply(req, data, pending)
                if reply is None and not pending:  # (data is not one whole frame)
                    buf = FrameBuffer()
                    reply = self._direct_wait(w, req, sock, poller, buf, pending, data)
        except (OSError, ProtocolError, DSPexError):
            reply = None
        except BaseException:  # interrupted: the pool thread takes over and cancels
            self._io.schedule(self._adopt, w, req, pending, b"" if buf is None else buf.take())
            self._io.schedule(self._cancel, req)
            raise
        if reply is None:  # anything unusual: the pool thread finishes the call
            self._io.schedule(self._adopt, w, req, pending, b"" if buf is None else buf.take())
            return NOT_TAKEN
        self._end_direct(w, req, reply, now)
        return reply

    async def _acall_direct(self, req: Req, loop: asyncio.AbstractEventLoop) -> Any:
        """:meth:`_call_direct` for a caller's event loop: the frame is written here and the
        reply read by the loop's own reader on the worker's socket, so neither the call nor
        its reply crosses the pool thread (two thread wake-ups fewer). Anything unusual is
        adopted by the pool thread, as on the sync path; cancelling the caller cancels the
        call there."""
        w = self._take_direct(req)
        if w is None:
            return NOT_TAKEN
        sock = w.sock
        assert sock is not None
        wait = _AsyncReply(self, w, req, sock, loop)
        try:
            loop.add_reader(sock.fileno(), wait.on_readable)
        except (NotImplementedError, RuntimeError):  # a loop without readers: the pool thread
            self._io.schedule(self._return_idle, w)
            return NOT_TAKEN
        frame, now = self._start_direct(req, w)
        try:
            if not _send(sock, frame):
                req.undelivered = True
                wait.finish(None)
            else:
                wait.arm()
            reply = await wait.fut
        except BaseException:
            fut = wait.fut
            wait.finish(None)
            got = fut.result() if fut.done() and not fut.cancelled() else None
            if got is not None:  # the reply came first: the call is over, the worker free
                self._end_direct(w, req, got, now)
            else:  # the pool thread takes over and cancels
                self._io.schedule(self._adopt, w, req, wait.pending, wait.buf.take())
                self._io.schedule(self._cancel, req)
            raise
        if reply is None:
            self._io.schedule(self._adopt, w, req, wait.pending, wait.buf.take())
            return NOT_TAKEN
        self._end_direct(w, req, reply, now)
        return reply

    def _return_idle(self, w: Worker) -> None:
        w.leased = False
        t = w.transport
        if t is not None and not t.is_closing():
            t.resume_reading()
        self._send_drops(w)
        if w.exit_seen:
            self._on_worker_lost(w)
        elif w.state == "idle":
            self._idle[w] = None
            self._pump()

    def _direct_wait(
        self,
        w: Worker,
        req: Req,
        sock: socket.socket,
        poller: select.poll,
        buf: FrameBuffer,
        pending: list[Message],
        data: bytes,
    ) -> list[Any] | None:
        """Wait for the reply after the first look found none (or not a lone one): the
        decoded Result/plain Error array, or None to hand the call to the pool thread."""
        unpack = self._codec.unpack
        deadline = req.deadline
        while True:
            if data:
                for body in buf.feed(data):
                    pending.append(unpack(body))
                if pending:
                    msg = pending[0]
                    if (
                        len(pending) == 1
                        and not len(buf)
                        and (
                            isinstance(msg, Result)
                            or (isinstance(msg, Error) and msg.limit is None)
                        )
                        and msg.id == req.id
                    ):
                        pending.clear()
                        return list(msg)
                    return None  # a callback request, a stream item, a limit: the pool's job
            elif w.exit_seen or w.state != "busy":
                return None
            data = b""
            now = _monotonic()
            wait = _SLICE_MS
            if deadline is not None:
                left = deadline - now
                if left <= 0:
                    return None
                if left < _SLICE:
                    wait = int(left * 1000) + 1
            if poller.poll(wait):
                try:
                    data = sock.recv(_RECV)
                except BlockingIOError:
                    continue
                if not data:
                    return None


class _AsyncReply:
    """The caller loop's side of an async direct call: reads the worker's socket when it is
    readable, settles ``fut`` with the reply (``None``: hand the call to the pool thread),
    and looks at the pool thread's flags and the deadline every ``_SLICE`` meanwhile."""

    __slots__ = ("buf", "fut", "loop", "pending", "pool", "req", "sock", "timer", "w")

    def __init__(
        self,
        pool: DirectPath,
        w: Worker,
        req: Req,
        sock: socket.socket,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.pool = pool
        self.w = w
        self.req = req
        self.sock = sock
        self.loop = loop
        self.fut: asyncio.Future[list[Any] | None] = loop.create_future()
        self.buf = FrameBuffer()
        self.pending: list[Message] = []
        self.timer: asyncio.TimerHandle | None = None

    def arm(self) -> None:
        deadline = self.req.deadline
        left = _SLICE if deadline is None else min(_SLICE, max(0.0, deadline - _monotonic()))
        self.timer = self.loop.call_later(left, self.tick)

    def finish(self, reply: list[Any] | None) -> None:
        """Stop reading and timing (always: the caller may have been cancelled meanwhile);
        settle ``fut`` with ``reply`` unless it is settled already."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        try:
            self.loop.remove_reader(self.sock.fileno())
        except (OSError, ValueError):  # (the socket was closed meanwhile)
            pass
        if not self.fut.done():
            self.fut.set_result(reply)

    def tick(self) -> None:
        self.timer = None
        w, deadline = self.w, self.req.deadline
        if w.exit_seen or w.state != "busy" or (deadline is not None and deadline <= _monotonic()):
            self.finish(None)
        elif not self.fut.done():
            self.arm()

    def on_readable(self) -> None:
        if self.fut.done():
            return
        try:
            data = self.sock.recv(_RECV)
        except BlockingIOError:
            return
        except OSError:
            self.finish(None)
            return
        if not data:  # the worker is gone
            self.finish(None)
            return
        pending, buf = self.pending, self.buf
        if not len(buf) and not pending:
            reply = self.pool._lone_reply(self.req, data, pending)
            if reply is not None or pending:  # (else data is not one whole frame)
                self.finish(reply)
                return
        try:
            for body in buf.feed(data):
                pending.append(self.pool._codec.unpack(body))
        except (ProtocolError, DSPexError):
            self.finish(None)
            return
        if pending:
            msg = pending[0]
            if (
                len(pending) == 1
                and not len(buf)
                and (isinstance(msg, Result) or (isinstance(msg, Error) and msg.limit is None))
                and msg.id == self.req.id
            ):
                pending.clear()
                self.finish(list(msg))
            else:
                self.finish(None)  # a callback request, a stream item, a limit: the pool's job


def _send(sock: socket.socket, frame: bytes) -> bool:
    """Write a whole frame to a worker's socket; False if the worker is gone (a partial
    frame is never run either)."""
    try:
        sent = sock.send(frame)
    except BlockingIOError:
        sent = 0
    except OSError:  # EPIPE/ECONNRESET: the worker is gone and never read the frame
        return False
    return sent == len(frame) or _send_rest(sock, memoryview(frame)[sent:])


def _send_rest(sock: socket.socket, view: memoryview) -> bool:
    """Write the rest of a frame the socket did not take at once; False if the peer is gone."""
    poller = select.poll()
    fd = sock.fileno()
    poller.register(fd, select.POLLOUT)
    while view:
        try:
            view = view[sock.send(view) :]
        except BlockingIOError:
            poller.poll(_SLICE_MS)
        except OSError:
            return False
    return True
