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

    def _call_direct(self, req: Req) -> Any:
        """Run ``req`` on a parked worker from this thread: its reply (a decoded Result or
        plain Error array), or ``NOT_TAKEN`` if no parked worker was free or the pool thread
        took the call over (it settles the call then)."""
        if self._state != "running" or telemetry.has_handlers():  # events: the classic path
            return NOT_TAKEN
        sess = req.session
        if sess is None:
            try:
                w = self._parked.pop()
            except IndexError:
                return NOT_TAKEN
        else:  # a session runs on its own worker, if that one is parked
            pinned = sess.worker
            if pinned is None or sess.lost or sess.closed:
                return NOT_TAKEN
            try:
                self._parked_pinned.remove(pinned)
            except ValueError:
                return NOT_TAKEN
            w = pinned
        sock = w.sock
        if w.state != "idle" or w.exit_seen or sock is None:  # changed while parked: give back
            self._io.schedule(self._return_idle, w)
            return NOT_TAKEN
        now = _monotonic()
        req.submitted = req.started = now
        timeout = req.deadline  # (relative until now)
        if timeout is not None:
            req.deadline = now + timeout
        req.state = "running"
        req.worker = w
        w.req = req
        w.state = "busy"
        frame = call_frame(
            req.id, req.method, req.args_bytes, timeout, None if sess is None else sess.id, 0
        )
        pending: list[Message] = []
        buf: FrameBuffer | None = None
        reply: list[Any] | None = None  # the reply, a decoded Result or plain Error array
        try:
            try:
                sent = sock.send(frame)
            except BlockingIOError:
                sent = 0
            except OSError:  # EPIPE/ECONNRESET: the worker is gone and never read the frame
                sent = -1
            if 0 <= sent < len(frame) and not _send_rest(sock, memoryview(frame)[sent:]):
                sent = -1
            if sent < 0:
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
                if is_lone_frame(data):  # one whole frame (the usual)
                    raw = self._codec.loads(data[4:])
                    data = b""
                    if type(raw) is list:
                        size = len(raw)
                        if size == 3 and raw[0] == "result" and raw[1] == req.id:
                            reply = raw
                        elif (
                            size == 8 and raw[0] == "error" and raw[1] == req.id and raw[5] is None
                        ):
                            reply = raw  # (a plain error: a resource limit is the pool's)
                    if reply is None:
                        pending.append(decode(raw))
                if reply is None and not pending:
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
        w.req = None
        req.state = "finished"
        w.requests_done += 1
        self._latencies.append(_monotonic() - now)
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
