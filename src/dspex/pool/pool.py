"""``Pool``: a supervised set of worker processes serving one handler target (the facade).

All supervision and I/O run on the pool's own event-loop thread (:mod:`~dspex.pool.loop`), so
a pool is not bound to the caller's loop: it can be used from many threads, from
``run_sync``'s per-thread loops and from plain sync code (``call_sync``). A call hops to the
pool thread and its result hops back to the caller's loop (or settles a sync caller's
:class:`~dspex.pool.records.SyncWaiter`; a sync call on a parked worker skips both hops, see
:mod:`~dspex.pool.direct`).

Request path (:mod:`~dspex.pool.dispatch`): bounded FIFO queue -> idle worker
(:func:`~dspex.pool.scheduler.pick_worker`, session affinity first) -> ``Call`` frame with the
time left -> result. Supervision (:mod:`~dspex.pool.supervisor`): a deadline timer kills the
worker at the hard timeout; a dead worker's call is retried once elsewhere if idempotent, else
fails with ``WorkerCrashed``. State records live in :mod:`~dspex.pool.records`.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from threading import get_ident
from typing import TYPE_CHECKING, Any

from dspex.errors import CallError, DSPexError, UserError
from dspex.pool.callbacks import Callbacks
from dspex.pool.config import PoolConfig
from dspex.pool.direct import NOT_TAKEN, DirectPath
from dspex.pool.dispatch import Dispatch, remote_error
from dspex.pool.outcomes import Outcomes
from dspex.pool.protocol import Error, decode, pack_args
from dspex.pool.records import DEFAULT, Mailbox, PoolState, Req, SyncWaiter
from dspex.pool.stats import snapshot
from dspex.pool.supervisor import Supervisor

if TYPE_CHECKING:
    from dspex.pool.session import PoolStream, Session, SessionMode, _SessionState

__all__ = ["DEFAULT", "Pool"]

_live_pools: weakref.WeakSet[Pool] = weakref.WeakSet()


class Pool(DirectPath, Dispatch, Supervisor, Outcomes, Callbacks):
    """A named pool of supervised worker processes; see the module docstring.

    ``Pool(config)`` or ``Pool(target="pkg.mod:factory", size=4, ...)`` (any
    :class:`PoolConfig` field as a keyword). Starts lazily on first call, or with
    :meth:`start`. Close with :meth:`close` / ``async with`` / ``with`` (also at exit).
    """

    def __init__(
        self, config: PoolConfig | None = None, *, name: str = "default", **options: Any
    ) -> None:
        super().__init__(config, name=name, **options)
        self.port = _Port(self)
        # outcomes to each caller loop ride one wake-up per batch (records.Mailbox)
        self._mailboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Mailbox] = (
            weakref.WeakKeyDictionary()
        )
        self._last_box: Mailbox | None = None
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
        if session is not None:
            return session.stream(method, *args, timeout=timeout, window=window, **kwargs)
        from dspex.pool.session import PoolStream

        return PoolStream(self.port, method, args, kwargs, None, timeout, window)

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

    async def close(self, *, cancel: bool = False, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Stop accepting calls, let in-flight ones finish (``cancel=True``: fail them now),
        then stop every worker: shutdown message, SIGTERM, then SIGKILL of its process group."""
        loop = self._loop
        if loop is None or self._state == "closed":
            self._state = "closed"
            return
        fut = asyncio.run_coroutine_threadsafe(self._aclose(cancel, timeout), loop)
        await asyncio.wrap_future(fut)
        self._io.stop()

    def close_sync(self, *, cancel: bool = False, timeout: float | None = None) -> None:
        """:meth:`close` for sync code."""
        loop = self._loop
        if loop is None or self._state == "closed":
            self._state = "closed"
            return
        if self._io.on_thread():
            raise UserError("close_sync() cannot run on the pool's own thread")
        asyncio.run_coroutine_threadsafe(self._aclose(cancel, timeout), loop).result()
        self._io.stop()

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
        return snapshot(self)

    # ------------------------------------------------------------------ caller side

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        return self._io.ensure(lambda: self._state in ("closing", "closed"))

    def _schedule(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` on the pool thread (``PoolClosed`` once the pool is gone)."""
        self._ensure_loop()
        self._io.schedule(fn, *args)

    def _post(self, req: Req) -> None:
        """Submit ``req`` on the pool thread; calls posted close together share one wake-up."""
        self._inbox.append(req)
        if not self._inbox_armed:
            self._inbox_armed = True
            try:
                self._schedule(self._drain_inbox)
            except BaseException:
                self._inbox_armed = False
                try:
                    self._inbox.remove(req)
                except ValueError:
                    pass
                raise

    def _run_on_loop(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the pool thread and wait for it (it must be quick)."""
        self._ensure_loop()
        return self._io.run(fn, *args)

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
    ) -> Req:
        if not isinstance(method, str) or not method or method.startswith("_"):
            raise CallError(f"method must be a public method name, got {method!r}")
        return Req(
            method,
            pack_args(args, kwargs, self._codec),
            session,
            idempotent,
            stream,
            self.config.request_timeout if timeout is DEFAULT else self._timeout(timeout),
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
        box = self._last_box  # (most callers use one loop: skip the weak-dict lookup)
        if box is None or box.loop is not caller:
            box = self._mailboxes.get(caller)
            if box is None:
                box = self._mailboxes.setdefault(caller, Mailbox(caller))
            self._last_box = box
        req.mailbox = box
        # a session's call runs directly on its parked worker (the bridge's calls); other
        # calls go through the pool thread, which pipelines them under load
        if session is not None and get_ident() != self._io.ident:
            if session.worker is not None and self._parked_pinned:
                reply = await self._acall_direct(req, caller)
                if reply is not NOT_TAKEN:
                    req.done = True  # (Req.resolve's part: the pool thread leaves it alone now)
                    ok, value = _outcome(reply)
                    if ok:
                        return value
                    raise value
            elif not self._want_direct:
                self._want_direct = True
                self._schedule(self._park_idle)
        if req.state == "new":  # not adopted from the direct path: submit it
            self._post(req)
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
        if get_ident() == self._io.ident:
            raise UserError("call_sync() cannot run on the pool's own thread")
        req = self._new_req(method, args, kwargs, session, timeout, idempotent)
        waiter = req.waiter = SyncWaiter()
        if self._parked if session is None else session.worker and self._parked_pinned:
            reply = self._call_direct(req)
            if reply is not NOT_TAKEN:  # (the pool thread may have settled it first: closed)
                req.done = True  # (Req.resolve's part; the waiter keeps the first outcome)
                return waiter.settle(*_outcome(reply))
        elif not self._want_direct:
            self._want_direct = True
            self._schedule(self._park_idle)
        if req.state == "new":  # not adopted from the direct path: submit it
            self._schedule(self._submit, req)
        try:
            return waiter.result()
        except BaseException:
            if not req.done:
                self._schedule(self._cancel, req)
            raise


def _outcome(reply: list[Any]) -> tuple[bool, Any]:
    """A direct call's reply (a decoded Result or plain Error array): ``(True, value)`` or
    ``(False, the typed error)``."""
    if reply[0] == "result":
        return True, reply[2]
    error = decode(reply)
    assert isinstance(error, Error)
    return False, remote_error(error)


class _Port:
    """The narrow interface sessions and streams use (see ``dspex.pool.session.PoolPort``)."""

    __slots__ = ("_pool", "call_sync")

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        # the sync call is the pool's own method (one Python frame fewer per session call)
        self.call_sync: Callable[
            [str, tuple[Any, ...], dict[str, Any], _SessionState | None, Any, bool], Any
        ] = pool._call_sync

    @property
    def name(self) -> str:
        return self._pool.name

    def open_session(self, st: _SessionState) -> None:
        pool = self._pool
        pool._run_on_loop(pool._open_session, st)

    def close_session(self, st: _SessionState) -> None:
        pool = self._pool
        pool._run_on_loop(pool._close_session, st)

    async def acall(
        self,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        st: _SessionState | None,
        timeout: Any,  # noqa: ASYNC109
        idempotent: bool,
    ) -> Any:
        return await self._pool._acall(method, args, kwargs, st, timeout, idempotent)

    def new_stream(
        self,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        st: _SessionState | None,
        timeout: Any,
        window: int,
    ) -> Req:
        return self._pool._new_req(method, args, kwargs, st, timeout, False, stream=window)

    @property
    def stream_window(self) -> int:
        return self._pool.config.stream_window

    def submit(self, req: Req) -> None:
        self._pool._schedule(self._pool._submit, req)

    def credit(self, req: Req, n: int) -> None:
        self._pool._schedule(self._pool._credit, req, n)

    def cancel(self, req: Req) -> None:
        self._pool._schedule(self._pool._cancel, req)


def close_all_pools() -> None:
    """Close every pool still open in this process (registered with ``atexit``)."""
    for pool in list(_live_pools):
        try:
            pool.close_sync(cancel=True)
        except DSPexError:
            pass
