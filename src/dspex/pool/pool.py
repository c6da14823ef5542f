"""``Pool``: a supervised set of worker processes serving one handler target.

All supervision and I/O run on the pool's own event-loop thread, so a pool is not bound to the
caller's loop: it can be used from many threads, from ``run_sync``'s per-thread loops and
from plain sync code (``call_sync``). A call hops to the pool thread (``call_soon_threadsafe``)
and its result hops back to the caller's loop (or completes a ``concurrent.futures.Future``
for sync callers).

Request path: bounded FIFO queue -> idle worker (session affinity first) -> ``Call`` frame
with the time left -> result. A deadline timer kills the worker at the hard timeout; a dead
worker's call is retried once elsewhere if idempotent, else fails with ``WorkerCrashed``.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import itertools
import os
import signal
import socket
import statistics
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal

import msgpack

from dspex import telemetry
from dspex.errors import (
    CallError,
    ConfigurationError,
    DSPexError,
    ExecutionTimeout,
    PoolClosed,
    PoolSaturated,
    PoolUnhealthy,
    ProtocolError,
    QueueTimeout,
    RemoteError,
    ResourceLimitExceeded,
    SessionLost,
    UserError,
    WorkerCrashed,
)
from dspex.pool import _procs
from dspex.pool._procs import ExitInfo, kill_group, read_rss
from dspex.pool.config import PoolConfig
from dspex.pool.protocol import (
    Cancel,
    Codec,
    Credit,
    DropSession,
    End,
    Error,
    FrameBuffer,
    InitFailed,
    Item,
    Message,
    ParentCall,
    ParentReply,
    Ready,
    Result,
    Shutdown,
    load_codec,
)

if TYPE_CHECKING:
    from dspex.pool.session import PoolStream, Session, SessionMode, _SessionState

__all__ = ["DEFAULT", "Pool"]


class _Default:
    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Any = _Default()
"""Sentinel: use the pool's configured value (e.g. ``timeout=DEFAULT``)."""

WorkerState = Literal["starting", "idle", "busy", "stopping", "dead"]
PoolState = Literal["new", "running", "unhealthy", "closing", "closed"]

_live_pools: weakref.WeakSet[Pool] = weakref.WeakSet()
_ids = itertools.count(1)


class _Worker:
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
        self.req: _Req | None = None
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


class _Req:
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
        self.state: Literal["new", "queued", "running", "finished"] = "new"
        self.done = False
        self.worker: _Worker | None = None
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


# A Call frame is assembled from pre-packed parts: fixarray(8) + "call" + id + method + the
# caller-packed args/kwargs + the last three fields (a packed 3-tuple minus its array header).
_CALL_PREFIX = b"\x98" + msgpack.packb("call")


def _pack_args(args: tuple[Any, ...], kwargs: dict[str, Any], codec: Codec) -> bytes:
    try:
        return msgpack.packb(list(args), use_bin_type=True, default=codec.default) + msgpack.packb(
            kwargs, use_bin_type=True, default=codec.default
        )
    except (TypeError, ValueError, OverflowError) as exc:
        raise CallError(
            f"arguments cannot be sent to a worker ({exc}); pass msgpack-compatible values "
            "or configure a codec (PoolConfig.codec)"
        ) from exc


class _WorkerProtocol(asyncio.Protocol):
    def __init__(self, pool: Pool, worker: _Worker) -> None:
        self.pool = pool
        self.worker = worker
        self.buf = FrameBuffer()

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

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool._on_worker_lost(self.worker)


class Pool:
    """A named pool of supervised worker processes; see the module docstring.

    ``Pool(config)`` or ``Pool(target="pkg.mod:factory", size=4, ...)`` (any
    :class:`PoolConfig` field as a keyword). Starts lazily on first call, or with
    :meth:`start`. Close with :meth:`close` / ``async with`` / ``with`` (also at exit).
    """

    def __init__(
        self, config: PoolConfig | None = None, *, name: str = "default", **options: Any
    ) -> None:
        if config is None:
            config = PoolConfig(**options)
        elif options:
            config = config.replace(**options)
        if not isinstance(config, PoolConfig):
            raise ConfigurationError(f"config must be a PoolConfig, got {type(config).__name__}")
        self.name = name
        self.config = config
        self._codec = load_codec(config.codec)
        self._state: PoolState = "new"
        self._last_error: str | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._spawner: _procs.Spawner | None = None
        self._workers: dict[int, _Worker] = {}
        self._idle: dict[_Worker, None] = {}
        self._queue: collections.deque[_Req] = collections.deque()
        self._sessions: dict[str, _SessionState] = {}
        self._callbacks: dict[str, Callable[..., Any]] = {}
        self._wids = itertools.count(1)
        self._restarts: collections.deque[float] = collections.deque()
        self._init_failures = 0
        self._start_waiters: list[asyncio.Future[None]] = []
        self._tick: asyncio.TimerHandle | None = None
        self._latencies: collections.deque[float] = collections.deque(maxlen=4096)
        self._counts = collections.Counter[str]()
        self._finalizers: set[asyncio.Task[None]] = set()
        _live_pools.add(self)

    def __repr__(self) -> str:
        return f"<Pool {self.name!r} {self.config.target} size={self.config.size} {self._state}>"

    # ------------------------------------------------------------------ public API

    @property
    def state(self) -> PoolState:
        return self._state

    async def start(self) -> None:
        """Start the workers now and wait until all are ready (``PoolUnhealthy`` if they can't)."""
        fut = asyncio.run_coroutine_threadsafe(self._await_ready(), self._ensure_loop())
        await asyncio.wrap_future(fut)

    def start_sync(self) -> None:
        """:meth:`start` for sync code."""
        asyncio.run_coroutine_threadsafe(self._await_ready(), self._ensure_loop()).result()

    async def call(
        self,
        method: str,
        /,
        *args: Any,
        session: Session | None = None,
        timeout: float | None = DEFAULT,  # noqa: ASYNC109 (the deadline crosses processes)
        idempotent: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Run ``handler.method(*args, **kwargs)`` in a worker and return its result.

        ``timeout`` is the whole deadline (queue wait + execution; default
        ``request_timeout``); ``idempotent=True`` allows one retry on another worker if the
        worker dies. Cancelling the awaiting task cancels the call in the worker.
        """
        if session is not None:
            return await session.call(
                method, *args, timeout=timeout, idempotent=idempotent, **kwargs
            )
        return await self._acall(method, args, kwargs, None, timeout, idempotent)

    def call_sync(
        self,
        method: str,
        /,
        *args: Any,
        session: Session | None = None,
        timeout: float | None = DEFAULT,
        idempotent: bool = False,
        **kwargs: Any,
    ) -> Any:
        """:meth:`call` for sync code (any thread; does not need an event loop)."""
        if session is not None:
            return session.call_sync(
                method, *args, timeout=timeout, idempotent=idempotent, **kwargs
            )
        return self._call_sync(method, args, kwargs, None, timeout, idempotent)

    def stream(
        self,
        method: str,
        /,
        *args: Any,
        session: Session | None = None,
        timeout: float | None = DEFAULT,
        window: int | None = None,
        **kwargs: Any,
    ) -> PoolStream:
        """Iterate a generator method's items: ``async for x in pool.stream("gen", 10): ...``.

        At most ``window`` items (default ``stream_window``) are in flight before the worker
        waits for the consumer. Use ``async with`` or ``aclose()`` when stopping early.
        """
        from dspex.pool.session import PoolStream

        state = None if session is None else session._state
        return PoolStream(
            self, method, args, kwargs, state, timeout, window or self.config.stream_window
        )

    def session(
        self,
        *,
        mode: SessionMode = "hint",
        ttl: float | None = DEFAULT,
        recipe: Callable[[Session], Awaitable[None]] | None = None,
    ) -> Session:
        """A session pinning stateful calls to one worker (see :class:`~dspex.pool.session.Session`)."""
        from dspex.pool.session import Session

        return Session(
            self, mode=mode, ttl=self.config.session_ttl if ttl is DEFAULT else ttl, recipe=recipe
        )

    def register_callback(self, name: str, fn: Callable[..., Any]) -> None:
        """A pool-wide function workers may call with ``current_call().call_parent(name, ...)``."""
        if not callable(fn):
            raise ConfigurationError(f"callback {name!r} must be callable")
        self._callbacks[name] = fn

    async def close(self, *, cancel: bool = False, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Stop accepting calls, let in-flight ones finish (``cancel=True``: fail them now),
        then stop every worker: shutdown message, SIGTERM, then SIGKILL of its process group."""
        loop = self._loop
        if loop is None or self._state == "closed":
            self._state = "closed"
            return
        fut = asyncio.run_coroutine_threadsafe(self._aclose(cancel, timeout), loop)
        await asyncio.wrap_future(fut)
        self._stop_thread()

    def close_sync(self, *, cancel: bool = False, timeout: float | None = None) -> None:
        """:meth:`close` for sync code."""
        loop = self._loop
        if loop is None or self._state == "closed":
            self._state = "closed"
            return
        if threading.current_thread() is self._thread:
            raise UserError("close_sync() cannot run on the pool's own thread")
        asyncio.run_coroutine_threadsafe(self._aclose(cancel, timeout), loop).result()
        self._stop_thread()

    async def __aenter__(self) -> Pool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close_sync()

    def stats(self) -> dict[str, Any]:
        """A snapshot: worker counts by state, queue, sessions, restarts, latency percentiles."""
        workers = list(self._workers.values())
        by_state = collections.Counter(w.state for w in workers)
        lat = sorted(self._latencies)
        return {
            "name": self.name,
            "target": self.config.target,
            "state": self._state,
            "size": self.config.size,
            "workers": by_state["idle"] + by_state["busy"] + by_state["starting"],
            "idle": by_state["idle"],
            "busy": by_state["busy"],
            "starting": by_state["starting"],
            "stopping": by_state["stopping"],
            "queued": len(self._queue),
            "sessions": len(self._sessions),
            "restarts": self._counts["restarts"],
            "recycles": self._counts["recycles"],
            "crashes": self._counts["crashes"],
            "calls": self._counts["calls"],
            "failures": self._counts["failures"],
            "retries": self._counts["retries"],
            "p50_ms": statistics.median(lat) * 1e3 if lat else None,
            "p99_ms": lat[max(0, int(len(lat) * 0.99) - 1)] * 1e3 if lat else None,
            "last_error": self._last_error,
            "pids": [w.pid for w in workers if w.state in ("idle", "busy") and w.pid],
        }

    # ------------------------------------------------------------------ caller side

    def _schedule(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` on the pool thread (``PoolClosed`` once the pool is gone)."""
        loop = self._loop or self._ensure_loop()
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed
            raise PoolClosed(f"pool {self.name!r} is closed", pool=self.name) from None

    def _run_on_loop(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the pool thread and wait for it (it must be quick)."""
        if threading.current_thread() is self._thread:
            return fn(*args)
        cf: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def run() -> None:
            try:
                cf.set_result(fn(*args))
            except BaseException as exc:
                cf.set_exception(exc)

        self._schedule(run)
        return cf.result()

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            return loop
        if loop is not None:
            raise PoolClosed(f"pool {self.name!r} is closed", pool=self.name)
        with self._lock:
            if self._loop is None:
                if self._state in ("closing", "closed"):
                    raise PoolClosed(f"pool {self.name!r} is closed", pool=self.name)
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=4, thread_name_prefix=f"dspex-pool-{self.name}-io"
                )
                self._thread = threading.Thread(
                    target=run, name=f"dspex-pool-{self.name}", daemon=True
                )
                self._thread.start()
                ready.wait()
                self._loop = loop
            return self._loop

    def _stop_thread(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if thread is threading.current_thread():
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        if not loop.is_running():
            loop.close()
        if self._executor is not None:
            self._executor.shutdown(wait=False)

    def _timeout(self, timeout: float | None) -> float | None:
        if timeout is DEFAULT:
            return self.config.request_timeout
        if timeout is not None and (not isinstance(timeout, int | float) or timeout <= 0):
            raise CallError(f"timeout must be a positive number or None, got {timeout!r}")
        return timeout

    def _new_req(
        self,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        session: _SessionState | None,
        timeout: float | None,
        idempotent: bool,
        stream: int = 0,
    ) -> _Req:
        if not isinstance(method, str) or not method or method.startswith("_"):
            raise CallError(f"method must be a public method name, got {method!r}")
        return _Req(
            method,
            _pack_args(args, kwargs, self._codec),
            session=session,
            idempotent=idempotent,
            stream=stream,
            timeout=self._timeout(timeout),
        )

    async def _acall(
        self,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        session: _SessionState | None,
        timeout: float | None,  # noqa: ASYNC109
        idempotent: bool,
    ) -> Any:
        req = self._new_req(method, args, kwargs, session, timeout, idempotent)
        caller = asyncio.get_running_loop()
        req.caller_loop = caller
        fut = req.fut = caller.create_future()
        self._schedule(self._submit, req)
        try:
            return await fut
        except asyncio.CancelledError:
            if not req.done:
                self._schedule(self._cancel, req)
            raise

    def _call_sync(
        self,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        session: _SessionState | None,
        timeout: float | None,
        idempotent: bool,
    ) -> Any:
        if self._thread is not None and threading.current_thread() is self._thread:
            raise UserError("call_sync() cannot run on the pool's own thread")
        req = self._new_req(method, args, kwargs, session, timeout, idempotent)
        cfut = req.cfut = concurrent.futures.Future()
        self._schedule(self._submit, req)
        try:
            return cfut.result()
        except BaseException:
            if not req.done:
                self._schedule(self._cancel, req)
            raise

    # ------------------------------------------------------------------ pool thread: requests

    def _fail(self, req: _Req, error: BaseException) -> None:
        if req.resolve(False, error):
            self._counts["failures"] += 1
            if telemetry.has_handlers():
                telemetry.emit(
                    "dspex.pool.call.exception",
                    {"duration": self._now() - req.submitted},
                    {
                        "pool": self.name,
                        "method": req.method,
                        "id": req.id,
                        "error": type(error).__name__,
                    },
                )

    def _now(self) -> float:
        loop = self._loop
        assert loop is not None
        return loop.time()

    def _submit(self, req: _Req) -> None:
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
            self._fail(req, PoolClosed(f"pool {self.name!r} is closed", pool=self.name))
            return
        if self._state == "unhealthy":
            self._fail(req, self._unhealthy_error())
            return
        if self._state == "new":
            self._begin()
        self._route(req, now)

    def _route(self, req: _Req, now: float) -> None:
        sess = req.session
        worker: _Worker | None = None
        if sess is not None:
            if sess.closed or sess.lost:
                self._fail(req, sess.lost_error(self.name))
                return
            pinned = sess.worker
            if pinned is not None:
                if pinned.state == "idle":
                    worker = pinned
                elif sess.mode == "strict_fail_fast":
                    self._fail(
                        req,
                        PoolSaturated(
                            f"session {sess.id}'s worker is busy (mode strict_fail_fast)",
                            pool=self.name,
                        ),
                    )
                    return
                elif sess.mode == "hint" and self._idle:
                    worker = self._pick_idle()
            elif self._idle:
                worker = self._pick_idle()
        elif self._idle:
            worker = self._pick_idle()
        if worker is not None:
            self._dispatch(req, worker, now)
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

    def _pick_idle(self) -> _Worker:
        # Prefer the most recently used worker that holds no session (warm caches, few pins).
        for w in reversed(self._idle):
            if not w.sessions:
                return w
        return next(reversed(self._idle))

    def _enqueue(self, req: _Req, now: float, *, front: bool) -> None:
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
        if limit is not None and req.timer is None:
            assert self._loop is not None
            req.timer = self._loop.call_at(limit, self._queue_expired, req)

    def _queue_expired(self, req: _Req) -> None:
        req.timer = None
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
        """Hand queued calls to idle workers, oldest first (respecting session affinity)."""
        if not self._queue or not self._idle:
            return
        now = self._now()
        for req in list(self._queue):
            if not self._idle:
                break
            if req.done:
                self._queue.remove(req)
                continue
            sess = req.session
            worker: _Worker | None = None
            if sess is None:
                worker = self._pick_idle()
            elif sess.lost or sess.closed:
                self._queue.remove(req)
                self._fail(req, sess.lost_error(self.name))
                continue
            elif sess.worker is None:
                worker = self._pick_idle()
            elif sess.worker.state == "idle":
                worker = sess.worker
            elif sess.mode == "hint":
                worker = self._pick_idle()
            if worker is not None:
                self._queue.remove(req)
                self._dispatch(req, worker, now)

    def _dispatch(self, req: _Req, w: _Worker, now: float) -> None:
        self._idle.pop(w, None)
        if req.timer is not None:
            req.timer.cancel()
            req.timer = None
        remaining: float | None = None
        if req.deadline is not None:
            remaining = req.deadline - now
            if remaining <= 0:
                self._idle[w] = None
                req.state = "finished"
                self._fail(
                    req, QueueTimeout(f"call {req.method} expired in the queue", pool=self.name)
                )
                return
        w.state = "busy"
        w.req = req
        req.worker = w
        req.state = "running"
        req.started = now
        sess = req.session
        if sess is not None and sess.worker is None:
            sess.worker = w
            w.sessions.add(sess.id)
        pack = self._codec._packer.pack
        frame = b"".join(
            (
                _CALL_PREFIX,
                pack(req.id),
                pack(req.method),
                req.args_bytes,
                pack((remaining, None if sess is None else sess.id, req.stream))[1:],
            )
        )
        w.send(len(frame).to_bytes(4, "big") + frame)
        if req.deadline is not None:
            assert self._loop is not None
            req.timer = self._loop.call_at(req.deadline, self._deadline_passed, req)
        if telemetry.has_handlers():
            telemetry.emit(
                "dspex.pool.checkout",
                {"queue_time": now - req.submitted},
                {"pool": self.name, "pid": w.pid, "method": req.method, "id": req.id},
            )

    def _deadline_passed(self, req: _Req) -> None:
        req.timer = None
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

    def _cancel(self, req: _Req) -> None:
        """The caller went away: drop a queued call, or cancel it in its worker."""
        if req.state == "queued":
            try:
                self._queue.remove(req)
            except ValueError:
                pass
            if req.timer is not None:
                req.timer.cancel()
                req.timer = None
            req.state = "finished"
            req.resolve(False, asyncio.CancelledError())
            return
        req.resolve(False, asyncio.CancelledError())
        w = req.worker
        if req.state == "running" and w is not None and w.req is req and w.cancel_timer is None:
            w.send(self._codec.frame(Cancel("cancel", req.id)))
            assert self._loop is not None
            w.cancel_timer = self._loop.call_later(
                self.config.cancel_grace, self._cancel_expired, w, req
            )

    def _cancel_expired(self, w: _Worker, req: _Req) -> None:
        w.cancel_timer = None
        if w.req is req and w.state == "busy":
            self._kill(w, "cancel")

    def _credit(self, req: _Req, n: int) -> None:
        w = req.worker
        if w is not None and w.req is req:
            w.send(self._codec.frame(Credit("credit", req.id, n)))

    # ------------------------------------------------------------------ pool thread: workers

    def _on_message(self, w: _Worker, msg: Message) -> None:
        kind = msg[0]
        if kind == "result" or kind == "error" or kind == "end":
            assert isinstance(msg, Result | Error | End)
            req = w.req
            if req is None or req.id != msg.id:
                return
            self._finish(w, req)
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
                self._fail(
                    req,
                    RemoteError(
                        f"{msg.type}: {msg.message}",
                        remote_type=msg.type,
                        remote_traceback=msg.traceback,
                    ),
                )
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

    def _emit_stop(self, req: _Req) -> None:
        if telemetry.has_handlers():
            now = self._now()
            telemetry.emit(
                "dspex.pool.call.stop",
                {"duration": now - req.submitted, "queue_time": req.started - req.submitted},
                {"pool": self.name, "method": req.method, "id": req.id},
            )

    def _finish(self, w: _Worker, req: _Req) -> None:
        w.req = None
        req.state = "finished"
        w.requests_done += 1
        if req.timer is not None:
            req.timer.cancel()
            req.timer = None
        if w.cancel_timer is not None:
            w.cancel_timer.cancel()
            w.cancel_timer = None

    def _checkin(self, w: _Worker) -> None:
        if w.state != "busy":
            return
        if telemetry.has_handlers():
            telemetry.emit("dspex.pool.checkin", {}, {"pool": self.name, "pid": w.pid})
        if w.limit_hit is not None:
            self._kill(w, "limit")
            return
        reason = self._recycle_reason(w)
        if reason is not None and self._may_recycle(w):
            self._retire(w, reason)
            return
        w.state = "idle"
        self._idle[w] = None
        self._pump()

    def _recycle_reason(self, w: _Worker) -> str | None:
        c = self.config
        if c.max_requests is not None and w.requests_done >= c.max_requests:
            return "max_requests"
        if c.ttl is not None and self._now() - w.spawned_at >= c.ttl:
            return "ttl"
        if w.recycle_due:
            return "rss"
        return None

    def _may_recycle(self, w: _Worker) -> bool:
        # A session without a recipe would be lost: keep its worker until the session ends.
        return all(
            (s := self._sessions.get(sid)) is None or s.recipe is not None for sid in w.sessions
        )

    def _on_ready(self, w: _Worker, msg: Ready) -> None:
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
        self._idle[w] = None
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

    def _kill(self, w: _Worker, reason: str) -> None:
        """Kill a worker's whole process group now (it is then replaced)."""
        if w.state == "dead":
            return
        w.exit_reason = w.exit_reason or reason
        self._idle.pop(w, None)
        if w.state != "starting":
            w.state = "stopping"
        if w.pid:
            kill_group(w.pid)

    def _retire(self, w: _Worker, reason: str) -> None:
        """Stop a worker gracefully (shutdown message, then SIGTERM, then SIGKILL)."""
        if w.state in ("dead", "stopping"):
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
        self._drop_sessions_of(w)
        self._reconcile()

    def _escalate(self, w: _Worker, sig: int) -> None:
        if w.state != "dead" and w.pid:
            kill_group(w.pid, sig)

    def _on_protocol_error(self, w: _Worker, exc: ProtocolError) -> None:
        req = w.req
        if req is not None:
            self._fail(req, ProtocolError(f"{exc} (worker {w.pid})", pool=self.name, pid=w.pid))
        self._last_error = str(exc)
        self._kill(w, "protocol")

    def _on_worker_lost(self, w: _Worker) -> None:
        if w.state == "dead":
            return
        prev = w.state
        w.state = "dead"
        self._idle.pop(w, None)
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
        task = asyncio.ensure_future(self._after_exit(w, prev))
        self._finalizers.add(task)
        task.add_done_callback(self._finalizers.discard)

    async def _after_exit(self, w: _Worker, prev: WorkerState) -> None:
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

    def _requeue_or_fail(self, w: _Worker, req: _Req, info: ExitInfo) -> None:
        if req.done:
            return
        if w.limit_hit is not None:
            self._fail(req, self._limit_error(w, w.limit_hit[0], None))
            return
        if info.signal == signal.SIGXCPU:
            w.limit_hit = ("cpu", float(self.config.cpu_limit_s or 0))
            self._fail(req, self._limit_error(w, "cpu", None))
            return
        if w.exit_reason in ("shutdown",) and self._state in ("closing", "closed"):
            self._fail(
                req, PoolClosed(f"pool {self.name!r} closed during the call", pool=self.name)
            )
            return
        retryable = req.idempotent and req.attempts == 0 and req.items_sent == 0
        if retryable and req.session is None and self._state == "running":
            req.attempts += 1
            self._counts["retries"] += 1
            if telemetry.has_handlers():
                telemetry.emit(
                    "dspex.pool.call.retry",
                    {},
                    {"pool": self.name, "method": req.method, "pid": w.pid},
                )
            req.worker = None
            self._enqueue(req, self._now(), front=True)
            return
        if retryable and req.session is not None:
            sess = req.session
            self._fail(
                req,
                SessionLost(
                    f"session {sess.id} lost its worker {w.pid} ({info.describe()}) during {req.method}",
                    pool=self.name,
                    session=sess.id,
                    retryable=True,
                ),
            )
            return
        self._fail(
            req,
            WorkerCrashed(
                f"worker {w.pid} of pool {self.name!r} died ({info.describe()}) during {req.method}",
                pool=self.name,
                pid=w.pid,
                signal=info.signal,
                exitcode=info.exitcode,
            ),
        )

    def _limit_error(self, w: _Worker, resource: str, detail: str | None) -> ResourceLimitExceeded:
        c = self.config
        limit = {
            "memory": c.memory_limit_mb,
            "cpu": c.cpu_limit_s,
            "files": c.open_files_limit,
        }.get(resource)
        text = f"worker {w.pid} exceeded its {resource} limit ({limit}) and was replaced"
        if detail:
            text += f": {detail}"
        return ResourceLimitExceeded(
            text, pool=self.name, pid=w.pid, resource=resource, limit=limit
        )

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

    def _unhealthy_error(self) -> PoolUnhealthy:
        return PoolUnhealthy(
            f"pool {self.name!r} is unhealthy: {self._last_error}",
            pool=self.name,
            last_error=self._last_error,
        )

    # ------------------------------------------------------------------ sessions

    def _drop_sessions_of(self, w: _Worker) -> None:
        """The worker is leaving on purpose: its sessions must rehydrate or be lost."""
        self._lose_sessions_of(w)

    def _lose_sessions_of(self, w: _Worker) -> None:
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
                if req.timer is not None:
                    req.timer.cancel()
                    req.timer = None
                req.state = "finished"
                self._fail(req, sess.lost_error(self.name))

    def _open_session(self, sess: _SessionState) -> None:
        c = self.config
        if self._state in ("closing", "closed"):
            raise PoolClosed(f"pool {self.name!r} is closed", pool=self.name)
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
            if w.state in ("idle", "busy"):
                w.send(self._codec.frame(DropSession("drop_session", sess.id)))
                if w.state == "idle" and self._recycle_reason(w) and self._may_recycle(w):
                    self._retire(w, self._recycle_reason(w) or "recycle")

    def _parent_call(self, w: _Worker, msg: ParentCall) -> None:
        req = w.req
        fn: Callable[..., Any] | None = None
        if req is not None and req.session is not None:
            fn = req.session.callbacks.get(msg.name)
        if fn is None:
            fn = self._callbacks.get(msg.name)
        loop = self._loop
        assert loop is not None

        def reply(ok: bool, value: Any) -> None:
            if w.state == "dead":
                return
            try:
                w.send(self._codec.frame(ParentReply("parent_reply", msg.cbid, ok, value)))
            except (TypeError, ValueError) as exc:
                w.send(
                    self._codec.frame(
                        ParentReply("parent_reply", msg.cbid, False, ["TypeError", str(exc)])
                    )
                )

        def failed(exc: BaseException) -> None:
            reply(False, [type(exc).__qualname__, str(exc)])

        if fn is None:
            failed(LookupError(f"no parent callback named {msg.name!r}"))
            return
        if asyncio.iscoroutinefunction(fn):
            target = req.caller_loop if req is not None and req.caller_loop is not None else loop
            if target.is_closed():
                target = loop
            cfut = asyncio.run_coroutine_threadsafe(fn(*msg.args, **msg.kwargs), target)
        else:
            assert self._executor is not None
            cfut = self._executor.submit(fn, *msg.args, **msg.kwargs)

        def done(f: concurrent.futures.Future[Any]) -> None:
            exc = f.exception()
            if exc is None:
                loop.call_soon_threadsafe(reply, True, f.result())
            else:
                loop.call_soon_threadsafe(failed, exc)

        cfut.add_done_callback(done)

    # ------------------------------------------------------------------ lifecycle

    def _begin(self) -> None:
        """First use: sweep leftovers of dead parents, start the template and the workers."""
        if self._state != "new":
            return
        self._state = "running"
        assert self._executor is not None
        _procs.sweep_leftovers()
        self._spawner = _procs.make_spawner(self.config, self.name, self._executor)
        self._reconcile()
        self._schedule_tick()

    async def _await_ready(self) -> None:
        if self._state == "new":
            self._begin()
        if self._state == "unhealthy":
            raise self._unhealthy_error()
        if self._state in ("closing", "closed"):
            raise PoolClosed(f"pool {self.name!r} is closed", pool=self.name)
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
            w = _Worker(next(self._wids), self._now())
            self._workers[w.wid] = w
            task = asyncio.ensure_future(self._spawn(w))
            self._finalizers.add(task)
            task.add_done_callback(self._finalizers.discard)

    async def _spawn(self, w: _Worker) -> None:
        assert self._loop is not None and self._spawner is not None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            try:
                w.pid = await self._spawner.spawn(theirs.fileno())
            finally:
                theirs.close()
            if telemetry.has_handlers():
                telemetry.emit("dspex.pool.worker.start", {}, {"pool": self.name, "pid": w.pid})
            await self._loop.create_unix_connection(lambda: _WorkerProtocol(self, w), sock=ours)
            self._watch_exit(w)
        except Exception as exc:  # SpawnError, OSError... the worker never came up
            ours.close()
            self._workers.pop(w.wid, None)
            w.state = "dead"
            self._last_error = str(exc)
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

    def _watch_exit(self, w: _Worker) -> None:
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

    def _on_exit_seen(self, w: _Worker) -> None:
        """The worker process ended. Frames it wrote last are still in the socket: let EOF
        deliver them first; kill its group so no grandchild keeps the socket open, and give
        EOF a moment before declaring the worker lost anyway."""
        self._close_pidfd(w)
        if w.pid:
            kill_group(w.pid)
        assert self._loop is not None
        self._loop.call_later(0.5, self._on_worker_lost, w)

    def _close_pidfd(self, w: _Worker) -> None:
        if w.pidfd >= 0:
            assert self._loop is not None
            self._loop.remove_reader(w.pidfd)
            os.close(w.pidfd)
            w.pidfd = -1

    def _startup_expired(self, w: _Worker) -> None:
        w.start_timer = None
        if w.state == "starting":
            self._kill(w, "startup_timeout")

    def _schedule_tick(self) -> None:
        c = self.config
        watch = c.memory_limit_mb is not None and c.memory_limit_kind == "rss"
        interval = c.memory_check_interval if watch or c.recycle_rss_mb else 0.25
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
        closed = PoolClosed(f"pool {self.name!r} is closed", pool=self.name)
        while self._queue:
            req = self._queue.popleft()
            if req.timer is not None:
                req.timer.cancel()
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


def close_all_pools() -> None:
    """Close every pool still open in this process (registered with ``atexit``)."""
    for pool in list(_live_pools):
        try:
            pool.close_sync(cancel=True)
        except DSPexError:
            pass
