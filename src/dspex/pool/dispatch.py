"""The request path on the pool thread: submit, queue, dispatch, deadlines, cancellation,
replies from workers, and check-in; plus the session table (affinity bookkeeping).

Worker selection is :func:`dspex.pool.scheduler.pick_worker`; supervision (kills, restarts,
recycling) is :mod:`dspex.pool.supervisor`.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from dspex import telemetry
from dspex.errors import (
    DSPexError,
    ExecutionTimeout,
    PoolSaturated,
    ProtocolError,
    QueueTimeout,
    RemoteError,
)
from dspex.pool.deadlines import Deadlines
from dspex.pool.protocol import (
    Cancel,
    Credit,
    DropSession,
    End,
    Error,
    InitFailed,
    Item,
    Message,
    ParentCall,
    Ready,
    Result,
    call_frame,
    payload_error,
)
from dspex.pool.records import Req, Worker
from dspex.pool.scheduler import pick_pipelined, pick_worker

if TYPE_CHECKING:
    from dspex.pool.session import _SessionState

__all__ = ["Dispatch", "remote_error"]


def remote_error(msg: Error) -> DSPexError:
    """The caller's exception for a worker's Error reply (no resource limit involved): the
    handler's typed error if it described one, else ``RemoteError``."""
    if isinstance(msg.payload, dict):
        return payload_error(msg.payload)
    return RemoteError(
        f"{msg.type}: {msg.message}", remote_type=msg.type, remote_traceback=msg.traceback
    )


class Dispatch(Deadlines):
    """Mixin: everything a request goes through between submission and its outcome."""

    def _submit(self, req: Req) -> None:
        now = self._now()
        req.submitted = now
        if req.deadline is not None:
            req.deadline += now
        self._counts["calls"] += 1
        if telemetry.has_handlers():
            telemetry.emit(
                "dspex.pool.call.start",
                {"system_time": time.time()},
                {"pool": self.name, "method": req.method, "id": req.id},
            )
        if req.done:  # cancelled before it got here
            return
        if self._state in ("closing", "closed"):
            self._fail(req, self._closed_error())
            return
        if self._state == "unhealthy":
            self._fail(req, self._unhealthy_error())
            return
        if self._state == "new":
            self._begin()
        self._route(req, now)

    def _route(self, req: Req, now: float) -> None:
        self._claim_pinned(req)
        picked = pick_worker(req, self._idle, self.name)
        if picked is None and (self._parked or self._parked_pinned) and self._unpark_one():
            picked = pick_worker(req, self._idle, self.name)
        if isinstance(picked, Worker):
            self._dispatch(req, picked, now)
            return
        if picked is not None:
            self._fail(req, picked)
            return
        w = None if self._queue else self._pipeline_target(req, now)  # (older calls first)
        if w is not None:
            self._dispatch(req, w, now)
            return
        if len(self._queue) >= self.config.max_queue:
            if telemetry.has_handlers():
                telemetry.emit(
                    "dspex.pool.saturated", {"queued": len(self._queue)}, {"pool": self.name}
                )
            self._fail(
                req,
                PoolSaturated(
                    f"pool {self.name!r} queue is full ({self.config.max_queue} waiting)",
                    pool=self.name,
                ),
            )
            return
        self._enqueue(req, now, front=False)
        if self._parked or self._parked_pinned:  # a sync caller parked one after we looked
            self._pump()

    def _claim_pinned(self, req: Req) -> None:
        """A session's worker parked for sync callers is taken back for this call."""
        sess = req.session
        w = None if sess is None else sess.worker
        if w is not None and w.leased and w.state == "idle" and self._reclaim(w):
            self._idle[w] = None

    def _enqueue(self, req: Req, now: float, *, front: bool) -> None:
        req.state = "queued"
        if front:
            self._queue.appendleft(req)
        else:
            self._queue.append(req)
        qt = self.config.queue_timeout
        limit = req.deadline
        if qt is not None:
            limit = now + qt if limit is None else min(limit, now + qt)
        req.queue_deadline = limit
        if limit is not None:
            self._watch(limit)

    def _queue_expired(self, req: Req) -> None:
        if req.state != "queued":
            return
        try:
            self._queue.remove(req)
        except ValueError:
            pass
        req.state = "finished"
        waited = self._now() - req.submitted
        self._fail(
            req,
            QueueTimeout(
                f"no worker of pool {self.name!r} became free within {waited:.3f}s",
                pool=self.name,
            ),
        )

    def _pump(self) -> None:
        """Hand queued calls to idle workers, oldest first (respecting session affinity), or
        pipeline them behind short running calls."""
        queue = self._queue
        if not queue:
            return
        pipelining = self.config.pipeline > 0
        if not self._idle and not self._unpark_one() and not pipelining:
            return
        now = self._now()
        i = 0  # calls before i keep waiting (their session's worker is busy)
        while i < len(queue):
            req = queue[i]
            if req.done:
                del queue[i]
                continue
            picked: Worker | DSPexError | None = None
            if self._idle or self._unpark_one():
                self._claim_pinned(req)
                picked = pick_worker(req, self._idle, self.name)
            elif not pipelining:
                break
            if picked is None and pipelining and req.session is None and not req.stream:
                picked = self._pipeline_target(req, now)
                if picked is None and not self._idle:
                    break  # no idle worker and no room behind a running call
            if picked is None:
                i += 1
                continue
            del queue[i]
            if isinstance(picked, Worker):
                self._dispatch(req, picked, now)
            else:
                self._fail(req, picked)

    def _pipeline_target(self, req: Req, now: float) -> Worker | None:
        """A busy worker to queue ``req`` behind (see :func:`~dspex.pool.scheduler.pick_pipelined`)."""
        c = self.config
        if c.pipeline <= 0 or req.session is not None or req.stream or self._state != "running":
            return None
        busy = [
            w
            for w in self._workers.values()
            if w.state == "busy"
            and not w.leased
            and not w.exit_seen
            and w.cancel_timer is None
            and w.limit_hit is None
            and not w.recycle_due
            and (
                (c.max_requests is None and c.ttl is None)
                or self._recycle_reason(w, ahead=1 + len(w.backlog)) is None
            )
        ]
        if not busy:
            return None
        return pick_pipelined(req, busy, c.pipeline, self._cost, now, c.pipeline_below)

    def _dispatch(self, req: Req, w: Worker, now: float) -> None:
        """Send ``req`` to ``w``: to run now if it is idle, else queued behind its running
        call (pipelined; it starts when the running call ends, see :meth:`_promote`)."""
        remaining: float | None = None
        if req.deadline is not None:
            remaining = req.deadline - now
            if remaining <= 0:
                req.state = "finished"
                self._fail(
                    req, QueueTimeout(f"call {req.method} expired in the queue", pool=self.name)
                )
                return
        pipelined = w.state == "busy"
        if pipelined:
            w.backlog.append(req)
            req.state = "pipelined"
            self._counts["pipelined"] += 1
        else:
            self._idle.pop(w, None)
            w.state = "busy"
            w.req = req
            req.state = "running"
            req.started = now
        req.worker = w
        sess = req.session
        if sess is not None and sess.worker is None:
            sess.worker = w
            w.sessions.add(sess.id)
        frame = call_frame(
            req.id,
            req.method,
            req.args_bytes,
            remaining,
            None if sess is None else sess.id,
            req.stream,
        )
        # held until the end of this batch of work on the pool thread: the frames for one
        # worker go out in one write (see _flush_out)
        if not w.outbox:
            self._dirty.append(w)
        w.outbox.append((frame, req))
        if not self._flush_armed:
            self._flush_armed = True
            assert self._loop is not None
            self._loop.call_soon(self._flush_out)
        if pipelined:  # it waits like a queued call (queue_timeout), then runs to its deadline
            qt = self.config.queue_timeout
            limit = req.deadline
            if qt is not None:
                limit = req.submitted + qt if limit is None else min(limit, req.submitted + qt)
            req.queue_deadline = limit
            if limit is not None:
                self._watch(limit)
        elif req.deadline is not None:
            self._watch(req.deadline)
        if telemetry.has_handlers():
            telemetry.emit(
                "dspex.pool.checkout",
                {"queue_time": now - req.submitted},
                {"pool": self.name, "pid": w.pid, "method": req.method, "id": req.id},
            )

    def _flush_out(self) -> None:
        """Write every worker's held Call frames (one write per worker)."""
        self._flush_armed = False
        dirty = self._dirty
        while dirty:
            dirty.pop().flush()

    def _promote(self, w: Worker) -> None:
        """``w``'s running call ended: the next pipelined call is the one it runs now."""
        req = w.backlog.popleft()
        w.req = req
        req.state = "running"
        req.started = self._now()
        assert self._loop is not None
        if req.done:  # cancelled or expired while it waited: the worker skips it, or must
            w.cancel_timer = self._loop.call_later(  # stop it within the grace, as any cancel
                self.config.cancel_grace, self._cancel_expired, w, req
            )
        elif req.deadline is not None:
            self._watch(req.deadline)

    def _pipeline_expired(self, req: Req) -> None:
        """A pipelined call waited too long behind its worker's running call: it ends with
        ``QueueTimeout`` as a queued one would, and the worker is told to skip it."""
        w = req.worker
        if req.state != "pipelined" or req.done or w is None:
            return
        waited = self._now() - req.submitted
        self._fail(
            req,
            QueueTimeout(
                f"no worker of pool {self.name!r} became free within {waited:.3f}s",
                pool=self.name,
            ),
        )
        w.send(self._codec.frame(Cancel("cancel", req.id)))

    def _deadline_passed(self, req: Req) -> None:
        w = req.worker
        if req.state != "running" or w is None or w.req is not req:
            return
        self._fail(
            req,
            ExecutionTimeout(
                f"call {req.method} exceeded its {req.deadline - req.submitted if req.deadline else 0:.3f}s "
                f"deadline; worker {w.pid} was killed",
                pool=self.name,
                pid=w.pid,
            ),
        )
        self._kill(w, "timeout")

    def _cancel(self, req: Req) -> None:
        """The caller went away: drop a queued call, or cancel it in its worker."""
        if req.state == "queued":
            try:
                self._queue.remove(req)
            except ValueError:
                pass
            req.state = "finished"
            req.resolve(False, asyncio.CancelledError())
            return
        req.resolve(False, asyncio.CancelledError())
        w = req.worker
        if req.state == "pipelined" and w is not None:  # the worker skips it when it gets there
            w.send(self._codec.frame(Cancel("cancel", req.id)))
            return
        if req.state == "running" and w is not None and w.req is req and w.cancel_timer is None:
            w.send(self._codec.frame(Cancel("cancel", req.id)))
            assert self._loop is not None
            w.cancel_timer = self._loop.call_later(
                self.config.cancel_grace, self._cancel_expired, w, req
            )

    def _cancel_expired(self, w: Worker, req: Req) -> None:
        w.cancel_timer = None
        if w.req is req and w.state == "busy":
            self._kill(w, "cancel")

    def _credit(self, req: Req, n: int) -> None:
        w = req.worker
        if w is not None and w.req is req:
            w.send(self._codec.frame(Credit("credit", req.id, n)))

    def _on_message(self, w: Worker, msg: Message) -> None:
        kind = msg[0]
        if kind == "result" or kind == "error" or kind == "end":
            assert isinstance(msg, Result | Error | End)
            req = w.req
            if req is None or req.id != msg.id:
                return
            self._finish(w, req)
            self._note_cost(req)
            if isinstance(msg, Result):
                if req.resolve(True, msg.value):
                    self._latencies.append(self._now() - req.submitted)
                    self._emit_stop(req)
            elif isinstance(msg, End):
                if req.resolve(True, None):
                    self._emit_stop(req)
            elif msg.limit is not None:
                w.limit_hit = (msg.limit, 0.0)
                self._fail(req, self._limit_error(w, msg.limit, f"{msg.type}: {msg.message}"))
            else:
                self._fail(req, remote_error(msg))
            self._checkin(w)
        elif isinstance(msg, Item):
            req = w.req
            if req is not None and req.id == msg.id and not req.done and req.on_item is not None:
                req.items_sent += 1
                req.on_item(msg.value)
        elif isinstance(msg, ParentCall):
            self._parent_call(w, msg)
        elif isinstance(msg, Ready):
            self._on_ready(w, msg)
        elif isinstance(msg, InitFailed):
            w.init_error = msg
            self._last_error = f"worker initialization failed: {msg.type}: {msg.message}"
        else:
            self._on_protocol_error(
                w, ProtocolError(f"unexpected {msg[0]!r} message from a worker")
            )

    def _note_cost(self, req: Req) -> None:
        """Keep a moving average of each method's run time (the pipelining rule reads it)."""
        cost = self._cost
        d = self._now() - req.started
        c = cost.get(req.method)
        if c is None and len(cost) >= 256:  # (method names come from callers: bounded)
            cost.clear()
        cost[req.method] = d if c is None else c + (d - c) * 0.25

    def _emit_stop(self, req: Req) -> None:
        if telemetry.has_handlers():
            now = self._now()
            telemetry.emit(
                "dspex.pool.call.stop",
                {"duration": now - req.submitted, "queue_time": req.started - req.submitted},
                {"pool": self.name, "method": req.method, "id": req.id},
            )

    def _finish(self, w: Worker, req: Req) -> None:
        w.req = None
        req.state = "finished"
        w.requests_done += 1
        if w.cancel_timer is not None:
            w.cancel_timer.cancel()
            w.cancel_timer = None

    def _checkin(self, w: Worker) -> None:
        if w.state != "busy":
            return
        if telemetry.has_handlers():
            telemetry.emit("dspex.pool.checkin", {}, {"pool": self.name, "pid": w.pid})
        if w.limit_hit is not None:
            self._kill(w, "limit")
            return
        if w.backlog:  # a pipelined call is already in its socket: it runs next
            self._promote(w)
            self._pump()
            return
        reason = self._recycle_reason(w)
        if reason is not None and self._may_recycle(w):
            self._retire(w, reason)
            return
        self._make_idle(w)
        self._pump()

    # ------------------------------------------------------------------ sessions

    def _lose_sessions_of(self, w: Worker) -> None:
        """``w`` is gone or leaving: its sessions must rehydrate (recipe) or are lost."""
        for sid in list(w.sessions):
            sess = self._sessions.get(sid)
            if sess is not None and sess.worker is w:
                sess.worker = None
                sess.lost = True
        w.sessions.clear()
        if self._queue:
            self._pump_lost()

    def _pump_lost(self) -> None:
        for req in list(self._queue):
            sess = req.session
            if sess is not None and sess.lost:
                self._queue.remove(req)
                req.state = "finished"
                self._fail(req, sess.lost_error(self.name))

    def _open_session(self, sess: _SessionState) -> None:
        c = self.config
        if self._state in ("closing", "closed"):
            raise self._closed_error()
        if c.max_sessions is not None and len(self._sessions) >= c.max_sessions:
            raise PoolSaturated(
                f"pool {self.name!r} already has {c.max_sessions} open sessions", pool=self.name
            )
        self._sessions[sess.id] = sess

    def _close_session(self, sess: _SessionState) -> None:
        self._sessions.pop(sess.id, None)
        w = sess.worker
        sess.closed = True
        sess.worker = None
        if w is not None:
            w.sessions.discard(sess.id)
            if w.leased and not self._reclaim(w):  # a sync caller holds it: drop on return
                w.drops.append(sess.id)
                return
            if w.state in ("idle", "busy"):
                w.send(self._codec.frame(DropSession("drop_session", sess.id)))
                if w.state == "idle" and self._recycle_reason(w) and self._may_recycle(w):
                    self._retire(w, self._recycle_reason(w) or "recycle")
                elif w.state == "idle" and w not in self._idle:  # it was parked
                    self._make_idle(w)
