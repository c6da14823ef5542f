"""Supervision on the pool thread: start and readiness, the health tick, kills and graceful
retirement, noticing a worker's death, restarts with intensity limits, recycling, close.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket

from dspex import telemetry
from dspex.errors import (
    ProtocolError,
)
from dspex.pool import _procs
from dspex.pool._procs import ExitInfo, kill_group, read_rss
from dspex.pool.core import PoolCore
from dspex.pool.protocol import FrameBuffer, Ready, Shutdown
from dspex.pool.records import Worker, WorkerState

__all__ = ["Supervisor"]


class WorkerProtocol(asyncio.Protocol):
    """The pool thread's end of one worker's socket: frames in, loss noticed."""

    def __init__(self, pool: PoolCore, worker: Worker) -> None:
        self.pool = pool
        self.worker = worker
        self.buf = FrameBuffer()
        worker.protocol = self

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.worker.transport = transport

    def data_received(self, data: bytes) -> None:
        pool, worker = self.pool, self.worker
        try:
            for body in self.buf.feed(data):
                pool._on_message(worker, pool._codec.unpack(body))
        except ProtocolError as exc:
            pool._on_protocol_error(worker, exc)
        if pool._dirty:  # the calls this batch of replies let run go out now
            pool._flush_out()

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool._on_worker_lost(self.worker)


class Supervisor(PoolCore):
    """Mixin: the life of the workers (and of the pool itself)."""

    def _recycle_reason(self, w: Worker, ahead: int = 0) -> str | None:
        """Why ``w`` should be recycled once ``ahead`` more calls end on it (None: no need)."""
        c = self.config
        if c.max_requests is not None and w.requests_done + ahead >= c.max_requests:
            return "max_requests"
        if c.ttl is not None and self._now() - w.spawned_at >= c.ttl:
            return "ttl"
        if w.recycle_due:
            return "rss"
        return None

    def _may_recycle(self, w: Worker) -> bool:
        # A session without a recipe would be lost: keep its worker until the session ends.
        return all(
            (s := self._sessions.get(sid)) is None or s.recipe is not None for sid in w.sessions
        )

    def _on_ready(self, w: Worker, msg: Ready) -> None:
        if w.state != "starting":
            return
        if w.start_timer is not None:
            w.start_timer.cancel()
            w.start_timer = None
        w.state = "idle"
        self._init_failures = 0
        if telemetry.has_handlers():
            telemetry.emit(
                "dspex.pool.worker.ready",
                {"duration": self._now() - w.spawned_at},
                {"pool": self.name, "pid": w.pid},
            )
        if self._state in ("closing", "closed"):
            self._retire(w, "shutdown")
            return
        self._make_idle(w)
        self._check_started()
        self._pump()

    def _check_started(self) -> None:
        if not self._start_waiters:
            return
        ready = sum(1 for w in self._workers.values() if w.state in ("idle", "busy"))
        if ready >= self.config.size:
            for fut in self._start_waiters:
                if not fut.done():
                    fut.set_result(None)
            self._start_waiters.clear()

    def _kill(self, w: Worker, reason: str) -> None:
        """Kill a worker's whole process group now (it is then replaced)."""
        if w.state == "dead":
            return
        self._reclaim(w)  # if a sync caller holds it, the caller sees the death and hands back
        w.exit_reason = w.exit_reason or reason
        self._idle.pop(w, None)
        if w.state != "starting":
            w.state = "stopping"
        if w.pid:
            kill_group(w.pid)

    def _retire(self, w: Worker, reason: str) -> None:
        """Stop a worker gracefully (shutdown message, then SIGTERM, then SIGKILL)."""
        if w.state in ("dead", "stopping"):
            return
        if not self._reclaim(w):  # a sync caller holds it: it hands it back for recycling
            w.recycle_due = True
            return
        self._idle.pop(w, None)
        w.state = "stopping"
        w.exit_reason = reason
        if reason != "shutdown":
            self._counts["recycles"] += 1
            if telemetry.has_handlers():
                telemetry.emit(
                    "dspex.pool.worker.recycle",
                    {},
                    {"pool": self.name, "pid": w.pid, "reason": reason},
                )
        w.send(self._codec.frame(Shutdown("shutdown")))
        assert self._loop is not None
        grace = self.config.kill_grace
        self._loop.call_later(grace, self._escalate, w, signal.SIGTERM)
        self._loop.call_later(grace * 2 + 0.05, self._escalate, w, signal.SIGKILL)
        self._lose_sessions_of(w)
        self._reconcile()

    def _escalate(self, w: Worker, sig: int) -> None:
        if w.state != "dead" and w.pid:
            kill_group(w.pid, sig)

    def _on_protocol_error(self, w: Worker, exc: ProtocolError) -> None:
        req = w.req
        if req is not None:
            self._fail(req, ProtocolError(f"{exc} (worker {w.pid})", pool=self.name, pid=w.pid))
        self._last_error = str(exc)
        self._kill(w, "protocol")

    def _on_worker_lost(self, w: Worker) -> None:
        if w.state == "dead":
            return
        if not self._reclaim(w):  # a sync caller holds it: it sees this and hands it back
            w.exit_seen = True
            return
        prev = w.state
        w.state = "dead"
        self._idle.pop(w, None)
        for _, req in w.outbox:  # frames never written: those calls never ran
            req.undelivered = True
        w.outbox.clear()
        self._close_pidfd(w)
        if w.transport is not None:
            w.transport.close()
        if w.pid:
            kill_group(
                w.pid
            )  # grandchildren in its group, and the worker if it only closed the pipe
        if w.start_timer is not None:
            w.start_timer.cancel()
        if w.cancel_timer is not None:
            w.cancel_timer.cancel()
        self._spawn_task(self._after_exit(w, prev))

    async def _after_exit(self, w: Worker, prev: WorkerState) -> None:
        assert self._spawner is not None
        info = await self._spawner.wait_exit(w.pid, 1.0) if w.pid else ExitInfo(None, None)
        self._workers.pop(w.wid, None)
        if telemetry.has_handlers():
            telemetry.emit(
                "dspex.pool.worker.exit",
                {"lifetime": self._now() - w.spawned_at},
                {
                    "pool": self.name,
                    "pid": w.pid,
                    "signal": info.signal,
                    "exitcode": info.exitcode,
                    "reason": w.exit_reason or "crash",
                },
            )
        req = w.req
        w.req = None
        behind = list(w.backlog)  # pipelined calls it never started: they run elsewhere
        w.backlog.clear()
        for later in reversed(behind):  # (re-queued at the front, in their order, behind req)
            later.state = "finished"
            later.undelivered = True
            self._requeue_or_fail(w, later, info)
        if req is not None:
            self._finish(w, req)
            self._requeue_or_fail(w, req, info)
        self._lose_sessions_of(w)
        closing = self._state in ("closing", "closed")
        planned = w.exit_reason in ("recycle", "shutdown", "max_requests", "ttl", "rss")
        if prev == "starting" and not closing:
            self._init_failures += 1
            if w.init_error is not None:
                self._last_error = (
                    f"worker initialization failed: {w.init_error.type}: {w.init_error.message}"
                )
            elif w.exit_reason == "startup_timeout":
                self._last_error = (
                    f"worker {w.pid} was not ready within {self.config.startup_timeout}s"
                )
            else:
                self._last_error = f"worker {w.pid} exited ({info.describe()}) before it was ready"
            if self._init_failures >= self.config.max_init_failures:
                self._go_unhealthy(
                    f"{self._init_failures} workers failed to start; last: {self._last_error}"
                )
        elif not planned and not closing:
            self._counts["crashes"] += 1
            self._last_error = (
                f"worker {w.pid} exited ({info.describe()}; {w.exit_reason or 'crash'})"
            )
            now = self._now()
            self._restarts.append(now)
            while self._restarts and self._restarts[0] < now - self.config.restart_window:
                self._restarts.popleft()
            if len(self._restarts) > self.config.max_restarts:
                self._go_unhealthy(
                    f"{len(self._restarts)} worker restarts within {self.config.restart_window}s; "
                    f"last: {self._last_error}"
                )
        if not closing and self._state != "unhealthy":
            if not planned:
                self._counts["restarts"] += 1
                if telemetry.has_handlers():
                    telemetry.emit(
                        "dspex.pool.worker.restart", {}, {"pool": self.name, "pid": w.pid}
                    )
            self._reconcile()
        self._pump()

    def _go_unhealthy(self, error: str) -> None:
        if self._state != "running":
            return
        self._state = "unhealthy"
        self._last_error = error
        if telemetry.has_handlers():
            telemetry.emit("dspex.pool.unhealthy", {}, {"pool": self.name, "last_error": error})
        exc = self._unhealthy_error()
        while self._queue:
            req = self._queue.popleft()
            req.state = "finished"
            self._fail(req, exc)
        for fut in self._start_waiters:
            if not fut.done():
                fut.set_exception(self._unhealthy_error())
        self._start_waiters.clear()

    def _begin(self) -> None:
        """First use: sweep leftovers of dead parents, start the template and the workers."""
        if self._state != "new":
            return
        self._state = "running"
        assert self._io.executor is not None
        self._spawner = _procs.make_spawner(self.config, self.name, self._io.executor)
        self._reconcile()
        self._schedule_tick()

    async def _await_ready(self) -> None:
        if self._state == "new":
            self._begin()
        if self._state == "unhealthy":
            raise self._unhealthy_error()
        if self._state in ("closing", "closed"):
            raise self._closed_error()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._start_waiters.append(fut)
        self._check_started()
        await fut

    def _reconcile(self) -> None:
        """Spawn workers until the live ones (starting, idle, busy) reach the configured size."""
        if self._state != "running":
            return
        live = sum(1 for w in self._workers.values() if w.state in ("starting", "idle", "busy"))
        starting = sum(1 for w in self._workers.values() if w.state == "starting")
        budget = max(0, self.config.startup_batch - starting)
        for _ in range(min(self.config.size - live, budget)):
            w = Worker(next(self._wids), self._now())
            self._workers[w.wid] = w
            self._spawn_task(self._spawn(w))

    async def _spawn(self, w: Worker) -> None:
        assert self._loop is not None and self._spawner is not None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            try:
                w.pid = await self._spawner.spawn(theirs.fileno())
            finally:
                theirs.close()
            if telemetry.has_handlers():
                telemetry.emit("dspex.pool.worker.start", {}, {"pool": self.name, "pid": w.pid})
            await self._loop.create_unix_connection(lambda: WorkerProtocol(self, w), sock=ours)
            w.sock = ours
            self._watch_exit(w)
        except Exception as exc:  # SpawnError, OSError... the worker never came up
            ours.close()
            self._workers.pop(w.wid, None)
            w.state = "dead"
            self._last_error = str(exc)
            if not isinstance(exc, _procs.TemplateLost):  # a dead template is re-created
                self._init_failures += 1
            if self._state == "running" and (
                self._init_failures >= self.config.max_init_failures
                or (isinstance(self._spawner, _procs.TemplateSpawner) and self._spawner.init_error)
            ):
                self._go_unhealthy(self._last_error)
            elif self._state == "running":
                self._loop.call_later(0.05, self._reconcile)
            return
        if w.state == "starting":
            w.start_timer = self._loop.call_later(
                self.config.startup_timeout, self._startup_expired, w
            )
        if self._state in ("closing", "closed"):
            self._kill(w, "shutdown")

    def _watch_exit(self, w: Worker) -> None:
        """Notice the worker's death itself, not only its pipe's EOF (a forked grandchild
        may hold the worker's end of the socket open)."""
        assert self._loop is not None
        try:
            w.pidfd = os.pidfd_open(w.pid)
        except ProcessLookupError:  # already gone (e.g. its factory failed at once): its
            self._on_exit_seen(w)  # last frames, such as the init error, still get read
            return
        except OSError:  # no pidfd support: rely on EOF and the template's reports
            return
        self._loop.add_reader(w.pidfd, self._on_exit_seen, w)

    def _on_exit_seen(self, w: Worker) -> None:
        """The worker process ended. Frames it wrote last are still in the socket: let EOF
        deliver them first; kill its group so no grandchild keeps the socket open, and give
        EOF a moment before declaring the worker lost anyway."""
        self._close_pidfd(w)
        w.exit_seen = True
        if w.state == "idle" and self._reclaim(w):  # never dispatch to it again
            self._idle.pop(w, None)
            w.state = "stopping"
        if w.pid:
            kill_group(w.pid)
        assert self._loop is not None
        self._loop.call_later(0.5, self._on_worker_lost, w)

    def _close_pidfd(self, w: Worker) -> None:
        if w.pidfd >= 0:
            assert self._loop is not None
            self._loop.remove_reader(w.pidfd)
            os.close(w.pidfd)
            w.pidfd = -1

    def _startup_expired(self, w: Worker) -> None:
        w.start_timer = None
        if w.state == "starting":
            self._kill(w, "startup_timeout")

    def _schedule_tick(self) -> None:
        c = self.config
        # a hard RSS cap is watched closely; RSS recycling (done when idle) and the rest of
        # the tick can wait a quarter second (fewer wake-ups of the pool thread in the parent)
        watch = c.memory_limit_mb is not None and c.memory_limit_kind == "rss"
        interval = c.memory_check_interval if watch else max(0.25, c.memory_check_interval)
        assert self._loop is not None
        self._tick = self._loop.call_later(interval, self._on_tick)

    def _on_tick(self) -> None:
        if self._state in ("closing", "closed"):
            return
        c = self.config
        now = self._now()
        cap = c.memory_limit_mb if c.memory_limit_kind == "rss" else None
        for w in list(self._workers.values()):
            if w.state not in ("idle", "busy") or not w.pid:
                continue
            if cap is not None or c.recycle_rss_mb is not None:
                rss = read_rss(w.pid)
                if rss is not None:
                    mb = rss / (1024 * 1024)
                    if cap is not None and mb > cap:
                        w.limit_hit = ("memory", mb)
                        self._kill(w, "limit")
                        continue
                    if c.recycle_rss_mb is not None and mb > c.recycle_rss_mb:
                        w.recycle_due = True
            if w.state == "idle":
                reason = self._recycle_reason(w)
                if reason is not None and self._may_recycle(w):
                    self._retire(w, reason)
        for sess in list(self._sessions.values()):
            if sess.ttl is not None and not sess.busy and now - sess.last_used > sess.ttl:
                sess.expired = True
                self._close_session(sess)
        self._reconcile()
        self._schedule_tick()

    async def _aclose(self, cancel: bool, timeout: float | None) -> None:  # noqa: ASYNC109
        if self._state == "closed":
            return
        was_new = self._state == "new"
        self._state = "closing"
        if self._tick is not None:
            self._tick.cancel()
        closed = self._closed_error()
        while self._queue:
            req = self._queue.popleft()
            req.state = "finished"
            self._fail(req, closed)
        for fut in self._start_waiters:
            if not fut.done():
                fut.set_exception(closed)
        self._start_waiters.clear()
        if was_new:
            self._state = "closed"
            return
        if not cancel:
            limit = self._now() + (self.config.shutdown_timeout if timeout is None else timeout)
            while any(w.state == "busy" for w in self._workers.values()) and self._now() < limit:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        for w in list(self._workers.values()):
            if w.req is not None:
                self._fail(w.req, closed)
            for later in w.backlog:
                self._fail(later, closed)
            if w.state in ("idle", "busy"):
                self._retire(w, "shutdown")
            elif w.state == "starting":
                self._kill(w, "shutdown")
        deadline = self._now() + self.config.kill_grace * 2 + 2.0
        while self._workers and self._now() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        for w in list(self._workers.values()):  # should not happen: the last resort
            if w.pid:
                kill_group(w.pid)
        if self._finalizers:
            await asyncio.wait(list(self._finalizers), timeout=2.0)
        if self._spawner is not None:
            await self._spawner.close()
        for sess in list(self._sessions.values()):
            sess.closed = True
        self._sessions.clear()
        self._state = "closed"
        self._drain_inbox()  # calls posted meanwhile end now (PoolClosed)
