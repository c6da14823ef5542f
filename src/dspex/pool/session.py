"""Sessions (stateful work pinned to one worker) and streams (generator results with backpressure).

Affinity modes, as in Snakepit:

- ``"hint"``: prefer the session's worker; if it is busy, run on any idle worker.
- ``"strict_queue"``: always the session's worker; wait for it in the queue.
- ``"strict_fail_fast"``: always the session's worker; if it is busy, fail at once
  with ``PoolSaturated``.

When the session's worker is lost (crash, kill, recycle, timeout), the next call raises
``SessionLost`` — it never silently runs on a fresh worker's empty state — unless a
*recipe* was given: then ``await recipe(session)`` rebuilds the state on another worker and the
call proceeds.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal, Protocol

from dspex import telemetry
from dspex.errors import ConfigurationError, PoolClosed, SessionLost, WorkerCrashed
from dspex.pool.records import DEFAULT, Req, Worker

if TYPE_CHECKING:
    from dspex.pool.pool import Pool

__all__ = ["PoolPort", "PoolStream", "Session", "SessionMode"]

SessionMode = Literal["hint", "strict_queue", "strict_fail_fast"]
_MODES = ("hint", "strict_queue", "strict_fail_fast")
Recipe = Callable[["Session"], Awaitable[None]]
_MAX_REBUILDS = 1000
"""Times one call may rebuild its lost session before running. Each time is a real worker death
that kept the call from running; a crash loop turns the pool unhealthy long before this (its
``max_restarts``), which ends the call with ``PoolUnhealthy``."""
_REBUILDING: contextvars.ContextVar[Session | None] = contextvars.ContextVar(
    "dspex_session_rebuilding", default=None
)
"""The session whose recipe runs in this context (its own calls neither wait nor rebuild)."""
_monotonic = time.monotonic


def _worker_loss(exc: BaseException) -> bool:
    """Whether ``exc`` (raised inside a recipe) means a worker died under it."""
    if isinstance(exc, WorkerCrashed):
        return True
    return isinstance(exc, SessionLost) and (
        exc.fields.get("reason") == "worker_lost" or bool(exc.fields.get("retryable"))
    )


class PoolPort(Protocol):
    """What sessions and streams need from a pool (``Pool.port``), and nothing more."""

    @property
    def name(self) -> str: ...

    def open_session(self, st: _SessionState) -> None: ...

    def close_session(self, st: _SessionState) -> None: ...

    async def acall(
        self,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        st: _SessionState | None,
        timeout: Any,  # noqa: ASYNC109
        idempotent: bool,
    ) -> Any: ...

    def call_sync(
        self,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        st: _SessionState | None,
        timeout: Any,
        idempotent: bool,
    ) -> Any: ...

    def new_stream(
        self,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        st: _SessionState | None,
        timeout: Any,
        window: int,
    ) -> Req: ...

    @property
    def stream_window(self) -> int: ...

    def submit(self, req: Req) -> None: ...

    def credit(self, req: Req, n: int) -> None: ...

    def cancel(self, req: Req) -> None: ...


class _SessionState:
    """What the pool thread knows about a session."""

    __slots__ = (
        "busy",
        "callbacks",
        "closed",
        "expired",
        "id",
        "last_used",
        "lost",
        "mode",
        "rebuilding",
        "recipe",
        "ttl",
        "worker",
    )

    def __init__(self, mode: SessionMode, ttl: float | None, recipe: Recipe | None) -> None:
        self.id = uuid.uuid4().hex[:16]
        self.mode = mode
        self.ttl = ttl
        self.recipe = recipe
        self.callbacks: dict[str, Callable[..., Any]] = {}
        self.worker: Worker | None = None
        self.lost = False
        self.closed = False
        self.expired = False
        self.rebuilding = False  # a recipe is rebuilding the state: other callers wait
        self.busy = 0
        self.last_used = time.monotonic()

    def lost_error(self, pool: str) -> SessionLost:
        if self.expired:
            reason, text = "expired", f"expired after {self.ttl}s idle"
        elif self.closed:
            reason, text = "closed", "is closed"
        else:
            reason, text = "worker_lost", "lost its worker"
        return SessionLost(
            f"session {self.id} of pool {pool!r} {text}", pool=pool, session=self.id, reason=reason
        )


class Session:
    """Calls pinned to one worker. ``async with pool.session(...) as s: await s.call(...)``."""

    def __init__(
        self,
        pool: Pool,
        *,
        mode: SessionMode = "hint",
        ttl: float | None = None,
        recipe: Recipe | None = None,
    ) -> None:
        if mode not in _MODES:
            raise ConfigurationError(
                f"session mode must be one of {_MODES}, got {mode!r}", field="mode"
            )
        if ttl is not None and (not isinstance(ttl, int | float) or ttl <= 0):
            raise ConfigurationError(f"session ttl must be > 0 or None, got {ttl!r}", field="ttl")
        if recipe is not None and not callable(recipe):
            raise ConfigurationError("session recipe must be an async callable", field="recipe")
        self._pool = pool
        self._port: PoolPort = pool.port
        self._state = _SessionState(mode, ttl, recipe)
        self._opened = False
        self._locks: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}

    def __repr__(self) -> str:
        return f"<Session {self.id} {self.mode} pool={self._pool.name!r}>"

    @property
    def id(self) -> str:
        return self._state.id

    @property
    def mode(self) -> SessionMode:
        return self._state.mode

    @property
    def pool(self) -> Pool:
        return self._pool

    @property
    def worker_pid(self) -> int | None:
        """The pid of the worker holding this session's state (None until the first call)."""
        w = self._state.worker
        return None if w is None else w.pid

    def register_callback(self, name: str, fn: Callable[..., Any]) -> None:
        """Let calls of this session invoke ``fn`` via ``current_call().call_parent(name, ...)``."""
        if not callable(fn):
            raise ConfigurationError(f"callback {name!r} must be callable")
        self._state.callbacks[name] = fn

    def open(self) -> Session:
        """Register with the pool (done by ``async with``/``with`` or the first call)."""
        if not self._opened:
            self._port.open_session(self._state)
            self._opened = True
        return self

    async def __aenter__(self) -> Session:
        return self.open()

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def __enter__(self) -> Session:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """End the session: the worker is told to drop its state (``handler.drop_session``)."""
        if self._opened and not self._state.closed:
            try:
                self._port.close_session(self._state)
            except PoolClosed:
                pass
        self._state.closed = True

    async def call(
        self,
        method: str,
        /,
        *args: Any,
        timeout: Any = DEFAULT,  # noqa: ASYNC109
        idempotent: bool = False,
        **kwargs: Any,
    ) -> Any:
        """``pool.call`` pinned to this session's worker (rehydrating it first if needed).

        With a recipe, a call the worker loss kept from running (queued behind another call,
        never delivered) is run again on the rebuilt session, up to ``_MAX_REBUILDS`` times; a
        call that was running when its worker died raises ``WorkerCrashed``.
        """
        self.open()
        st = self._state
        if _REBUILDING.get() is self:  # the recipe's own calls: they fail to the recipe
            return await self._port.acall(method, args, kwargs, st, timeout, idempotent)
        for attempt in range(_MAX_REBUILDS):
            if st.lost or st.expired or st.rebuilding:
                await self._rehydrate()
            st.busy += 1
            try:
                return await self._port.acall(method, args, kwargs, st, timeout, idempotent)
            except SessionLost as exc:
                if not self._may_rebuild(attempt, exc):
                    raise
            finally:
                st.busy -= 1
                st.last_used = time.monotonic()
        raise AssertionError("unreachable")

    def _may_rebuild(self, attempt: int, exc: SessionLost) -> bool:
        """A call got ``SessionLost``: may it rebuild the session and run again?"""
        st = self._state
        if st.recipe is None or attempt + 1 >= _MAX_REBUILDS or (st.closed and not st.expired):
            return False
        # ours: the session lost its worker (another caller may be rebuilding it already);
        # a SessionLost the handler raised itself is not
        return st.lost or st.expired or st.rebuilding or _worker_loss(exc)

    def call_sync(
        self,
        method: str,
        /,
        *args: Any,
        timeout: Any = DEFAULT,
        idempotent: bool = False,
        **kwargs: Any,
    ) -> Any:
        """:meth:`call` for sync code."""
        st = self._state
        if not (st.lost or st.expired or st.rebuilding):  # the direct path: no event loop
            if not self._opened:
                self.open()
            st.busy += 1
            try:
                return self._port.call_sync(method, args, kwargs, st, timeout, idempotent)
            except SessionLost as exc:
                if not self._may_rebuild(0, exc):
                    raise
            finally:
                st.busy -= 1
                st.last_used = _monotonic()
        # rebuild the session on another worker (recipe), then call: what `call` does
        # (imported here, not per call: an import statement costs ~6k instructions each time)
        from dspex._sync import run_sync

        return run_sync(self.call(method, *args, timeout=timeout, idempotent=idempotent, **kwargs))

    def stream(
        self,
        method: str,
        /,
        *args: Any,
        timeout: Any = DEFAULT,
        window: int | None = None,
        **kwargs: Any,
    ) -> PoolStream:
        """``pool.stream`` pinned to this session's worker."""
        self.open()
        return PoolStream(self._port, method, args, kwargs, self._state, timeout, window)

    async def _rehydrate(self) -> None:
        """Run the recipe on a fresh worker (once for all waiting callers of this loop).

        A worker dying under the recipe is survived: the recipe runs again on another one
        (up to ``_MAX_REBUILDS`` times); any other failure raises ``SessionLost``."""
        st = self._state
        if st.recipe is None:
            raise st.lost_error(self._port.name)
        loop = asyncio.get_running_loop()
        lock = self._locks.setdefault(loop, asyncio.Lock())
        async with lock:
            for attempt in range(_MAX_REBUILDS):
                if not (st.lost or st.expired):
                    return  # another task rebuilt it meanwhile
                if st.expired:
                    st.closed = False
                    self._port.open_session(st)
                st.lost = st.expired = False
                st.worker = None
                st.rebuilding = True
                token = _REBUILDING.set(self)
                started = time.perf_counter()
                try:
                    await st.recipe(self)
                except Exception as exc:
                    st.lost = True
                    if _worker_loss(exc) and attempt + 1 < _MAX_REBUILDS and not st.closed:
                        continue
                    raise SessionLost(
                        f"session {st.id}: rehydration recipe failed: {type(exc).__name__}: {exc}",
                        pool=self._port.name,
                        session=st.id,
                        reason="recipe_failed",
                    ) from exc
                except BaseException:  # cancelled: the next caller rebuilds
                    st.lost = True
                    raise
                finally:
                    st.rebuilding = False
                    _REBUILDING.reset(token)
                telemetry.emit(
                    "dspex.pool.session.rehydrate",
                    {"duration": time.perf_counter() - started},
                    {"pool": self._port.name, "session": st.id},
                )


class PoolStream:
    """Async iterator over a worker generator's items, with a credit window (backpressure)."""

    def __init__(
        self,
        pool: PoolPort,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        session: _SessionState | None,
        timeout: Any,
        window: int | None,
    ) -> None:
        if window is None:
            window = pool.stream_window
        if not isinstance(window, int) or window < 1:
            raise ConfigurationError(
                f"stream window must be an integer >= 1, got {window!r}", field="window"
            )
        self._pool = pool
        self._window = window
        self._req: Req = pool.new_stream(method, args, kwargs, session, timeout, window)
        self._items: collections.deque[Any] = collections.deque()
        self._wake: asyncio.Future[None] | None = None
        self._started = False
        self._finished = False
        self._consumed = 0

    def __aiter__(self) -> PoolStream:
        return self

    async def __aenter__(self) -> PoolStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        req = self._req
        req.caller_loop = loop
        req.fut = loop.create_future()
        ref = weakref.ref(self)  # no cycle: an abandoned stream is freed (and cancelled) at once

        def poke(_: object) -> None:
            stream = ref()
            if stream is not None:
                stream._poke()

        def push(value: Any) -> None:
            stream = ref()
            if stream is not None:
                stream._push(value)

        def on_item(value: Any) -> None:  # on the pool thread
            loop.call_soon_threadsafe(push, value)

        req.fut.add_done_callback(poke)

        req.on_item = on_item
        self._pool.submit(req)
        self._started = True

    def _push(self, value: Any) -> None:
        self._items.append(value)
        self._poke()

    def _poke(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    async def __anext__(self) -> Any:
        if self._finished:
            raise StopAsyncIteration
        if not self._started:
            self._start()
        req = self._req
        fut = req.fut
        assert fut is not None
        while True:
            if self._items:
                value = self._items.popleft()
                self._consumed += 1
                if self._consumed >= max(1, self._window // 2) and not fut.done():
                    self._pool.credit(req, self._consumed)
                    self._consumed = 0
                return value
            if fut.done():
                self._finished = True
                if fut.cancelled():
                    raise StopAsyncIteration
                exc = fut.exception()
                if exc is not None:
                    raise exc
                raise StopAsyncIteration
            self._wake = asyncio.get_running_loop().create_future()
            try:
                await self._wake
            except asyncio.CancelledError:
                await self.aclose()
                raise

    def __del__(self) -> None:
        # Abandoned mid-way (e.g. the consuming task was cancelled inside its loop body):
        # cancel the generator in the worker instead of leaving it waiting for credit.
        if self._started and not self._finished and not self._req.done:
            try:
                self._pool.cancel(self._req)
            except (PoolClosed, RuntimeError):
                pass

    async def aclose(self) -> None:
        """Stop early: the worker's generator is cancelled (and the worker freed)."""
        if self._started and not self._finished:
            self._finished = True
            if not self._req.done:
                try:
                    self._pool.cancel(self._req)
                except PoolClosed:
                    pass
        self._finished = True
