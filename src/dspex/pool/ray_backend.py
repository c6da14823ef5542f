"""A pool whose workers are Ray actors: ``pools={"dspy": {"backend": "ray", "size": 4}}``.

Each actor imports the pool's ``target`` factory and serves the handler it builds, exactly
as a local worker process does: handler code sees the same
:func:`dspex.pool.worker.current_call` context (``session``, ``remaining()``,
``cancelled``, ``check()``, ``call_parent()``/``acall_parent()``), so the DSPy worker host
runs unchanged on a Ray cluster.

A call is one Ray actor method call, ``run``, that executes the handler method in a thread of
the (threaded) actor and returns its outcome, awaited as an ObjectRef: a quick call costs one
actor round trip. A stream, or a call still running after a few milliseconds, also has its
events read with ``poll`` (streamed items, parent-callback requests answered with ``reply``,
the memory cap); ``cancel`` cancels a call. Those control methods run in their own
concurrency group, never behind running calls. The parent drives a call with one async
function that sync callers reach through ``run_sync``.

Failure semantics follow the local pool: a call past its deadline gets
:class:`~dspex.errors.ExecutionTimeout` and its actor is killed and replaced; an actor that
dies costs the call it ran (:class:`~dspex.errors.WorkerCrashed`) and is replaced on next
use; sessions pin to one actor and, when it dies, are rebuilt on the replacement by their
recipe (or fail with :class:`~dspex.errors.SessionLost`); actors failing at startup make the
pool :class:`~dspex.errors.PoolUnhealthy`.

Limits follow it too: ``max_requests``, ``ttl`` and ``recycle_rss_mb`` recycle an actor (its
calls in flight finish on it; new calls start a fresh one; a session without a recipe keeps
its actor until it closes), ``memory_limit_mb`` (kind ``"rss"``) is watched inside the actor
and costs the call :class:`~dspex.errors.ResourceLimitExceeded`, ``open_files_limit`` is the
actor's ``RLIMIT_NOFILE``, ``max_sessions`` bounds open sessions. Not applied on Ray (a
warning says so when set): ``python``, ``cwd``, ``cpu_limit_s``, ``max_processes``,
``codec``, ``session_ttl`` and address-space memory caps; the fork server and the call queue
(calls go straight to the actors, which are threaded) do not exist here.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import itertools
import logging
import pickle
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from dspex.errors import (
    ConfigurationError,
    ExecutionTimeout,
    PoolClosed,
    PoolSaturated,
    PoolUnhealthy,
    RemoteError,
    ResourceLimitExceeded,
    SessionLost,
    WorkerCrashed,
)
from dspex.pool._ray_actor import _Host, dumps, missing_callback
from dspex.pool.config import PoolConfig

__all__ = ["RayPool", "RaySession"]

logger = logging.getLogger(__name__)

_POLL = 0.5  # seconds an actor's poll blocks waiting for an event
_FIRST_POLL = 0.05  # a call still running after this long has its events polled
_CONTROL = ("ready", "poll", "reply", "cancel", "drop_session")
"""Actor methods of the ``control`` concurrency group: never queued behind running calls."""


def _until(deadline: float | None, cap: float | None) -> float | None:
    """Seconds to wait: ``cap``, never past ``deadline`` (``None``: no bound)."""
    if deadline is None:
        return cap
    left = max(0.0, deadline - time.monotonic())
    return left if cap is None else min(cap, left)


def _observe(future: asyncio.Future[Any]) -> None:
    """Retrieve an abandoned outcome's error (the actor was killed): no 'never retrieved'."""
    if not future.cancelled():
        future.exception()


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigurationError(
            "the Ray pool backend needs the ray extra: pip install 'dspex[ray]'"
        ) from None
    return ray


# ---------------------------------------------------------------------------- parent side


class _Slot:
    """One actor position of the pool; the actor is replaced when it dies."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.actor: Any = None
        self.pid: int | None = None
        self.generation = 0
        self.busy = 0
        self.calls_done = 0
        self.spawned_at = 0.0
        self.rss_mb: float | None = None
        self.sessions: dict[str, tuple[bool, int]] = {}
        """Sessions pinned here: id -> (has a recipe, the actor generation they live on)."""


class RaySession:
    """Calls pinned to one actor; rebuilt by ``recipe`` on a replacement if that actor dies."""

    def __init__(
        self,
        pool: RayPool,
        *,
        mode: Any = "hint",
        ttl: float | None = None,
        recipe: Callable[[Any], Awaitable[None]] | None = None,
    ) -> None:
        self._pool = pool
        self._id = uuid.uuid4().hex
        self.mode = mode
        self.ttl = ttl
        self._recipe = recipe
        self._slot: _Slot | None = None
        self._generation = -1
        self._callbacks: dict[str, Callable[..., Any]] = {}
        self._lock: asyncio.Lock | None = None
        self.closed = False

    @property
    def id(self) -> str:
        return self._id

    @property
    def worker_pid(self) -> int | None:
        return None if self._slot is None else self._slot.pid

    def register_callback(self, name: str, fn: Callable[..., Any]) -> None:
        if not callable(fn):
            raise ConfigurationError(f"callback {name!r} must be callable")
        self._callbacks[name] = fn

    async def _pinned(self) -> _Slot:
        pool = self._pool
        if self._slot is None:
            self._slot = min(pool._slots, key=lambda s: s.busy)
            await pool._ensure_actor(self._slot)
            self._generation = self._slot.generation
            self._slot.sessions[self._id] = (self._recipe is not None, self._generation)
            return self._slot
        slot = self._slot
        if slot.actor is None or slot.generation != self._generation:
            if self._recipe is None:
                raise SessionLost(
                    f"session {self._id}'s actor in pool {pool.name!r} died and the session "
                    "has no recipe to rebuild it",
                    pool=pool.name,
                )
            await pool._ensure_actor(slot)
            self._generation = slot.generation
            slot.sessions[self._id] = (True, self._generation)
            await self._recipe(self)
        return slot

    async def call(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        """Run ``method`` on this session's actor. If that actor died since the last call,
        the session is first rebuilt by its recipe on the replacement (else ``SessionLost``);
        a call whose actor dies under it raises ``WorkerCrashed`` (retried once, after the
        rebuild, only with ``idempotent=True``)."""
        if self.closed:
            raise SessionLost(f"session {self._id} is closed", pool=self._pool.name)
        timeout = kwargs.pop("timeout", self._pool.config.request_timeout)
        idempotent = bool(kwargs.pop("idempotent", False))
        for attempt in (0, 1):
            slot = await self._pinned()
            try:
                return await self._pool._drive(
                    slot, method, list(args), kwargs, self._id, timeout, self._callbacks
                )
            except WorkerCrashed:
                if not idempotent or self._recipe is None or attempt == 1:
                    raise
        raise AssertionError("unreachable")

    def call_sync(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        from dspex._sync import run_sync

        return run_sync(self.call(method, *args, **kwargs))

    def stream(self, method: str, /, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        return self._pool._stream(method, list(args), kwargs, self)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._pool._open_sessions.discard(self._id)
        slot = self._slot
        if slot is not None:
            slot.sessions.pop(self._id, None)
        if slot is not None and slot.actor is not None and slot.generation == self._generation:
            slot.actor.drop_session.remote(self._id)

    def __enter__(self) -> RaySession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> RaySession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class RayPool:
    """The :class:`~dspex.pool.base.PoolBackend` on Ray actors (see the module docstring)."""

    def __init__(self, config: PoolConfig, *, name: str = "default") -> None:
        if config.backend != "ray":
            raise ConfigurationError(f"RayPool needs backend='ray', got {config.backend!r}")
        self.config = config
        self.name = name
        self._slots = [_Slot(i) for i in range(config.size)]
        self._callbacks: dict[str, Callable[..., Any]] = {}
        self._ids = itertools.count(1)
        self._actor_cls: Any = None
        self._state = "new"
        self._restarts: list[float] = []
        self._calls = 0
        self._latencies: list[float] = []
        self._rr = itertools.count()
        self._inflight: collections.Counter[int] = collections.Counter()  # by id(actor)
        self._retiring: dict[int, Any] = {}  # recycled actors still finishing calls
        self._recycles: collections.Counter[str] = collections.Counter()
        self._open_sessions: set[str] = set()
        self._memory_cap = config.memory_limit_mb is not None and config.memory_limit_kind == "rss"
        _warn_unsupported(config, name)

    def __repr__(self) -> str:
        return f"<RayPool {self.name!r} {self.config.target} size={self.config.size} {self._state}>"

    @property
    def state(self) -> str:
        return self._state

    # ------------------------------------------------------------------ lifecycle
    def _init_ray(self) -> Any:
        ray = _ray()
        if not ray.is_initialized():
            ray.init(
                address=self.config.address,
                include_dashboard=False,
                log_to_driver=False,
                ignore_reinit_error=True,
            )
        if self._actor_cls is None:
            for name in _CONTROL:
                ray.method(concurrency_group="control")(getattr(_Host, name))
            self._actor_cls = ray.remote(
                max_concurrency=64, concurrency_groups={"control": 16}, max_restarts=0
            )(_Host)
        return ray

    async def _ensure_actor(self, slot: _Slot) -> None:
        if self._state == "closed":
            raise PoolClosed(f"pool {self.name!r} is closed", pool=self.name)
        if slot.actor is not None:
            return
        ray = self._init_ray()
        config = self.config
        limits = {
            "report_rss": config.recycle_rss_mb is not None,
            "memory_limit_mb": config.memory_limit_mb
            if config.memory_limit_kind == "rss"
            else None,
            "memory_check_interval": config.memory_check_interval,
            "open_files_limit": config.open_files_limit,
        }
        actor = self._actor_cls.options(num_cpus=0).remote(
            config.target, dict(config.env), list(config.pythonpath), limits
        )
        try:
            async with asyncio.timeout(config.startup_timeout):
                pid = await actor.ready.remote()
        except TimeoutError:
            ray.kill(actor)
            raise PoolUnhealthy(
                f"a Ray actor of pool {self.name!r} was not ready in {config.startup_timeout:g} s",
                pool=self.name,
                last_error="startup timeout",
            ) from None
        except Exception as exc:
            ray.kill(actor)
            raise PoolUnhealthy(
                f"pool {self.name!r}: the handler factory {config.target!r} failed in its Ray "
                f"actor: {_cause(exc)}",
                pool=self.name,
                last_error=_cause(exc),
            ) from None
        if slot.actor is not None:  # another caller started this slot's actor meanwhile
            ray.kill(actor)
            return
        slot.actor, slot.pid = actor, int(pid)
        slot.generation += 1
        slot.calls_done, slot.spawned_at, slot.rss_mb = 0, time.monotonic(), None
        self._state = "running"

    async def start(self) -> None:
        """Start every actor and wait until each has built its handler."""
        await asyncio.gather(*(self._ensure_actor(slot) for slot in self._slots))

    def start_sync(self) -> None:
        from dspex._sync import run_sync

        run_sync(self.start())

    def _lost(self, slot: _Slot) -> None:
        if slot.actor is not None:
            try:
                _ray().kill(slot.actor)
            except Exception:
                pass
        slot.actor, slot.pid = None, None
        now = time.monotonic()
        self._restarts = [t for t in self._restarts if now - t < self.config.restart_window]
        self._restarts.append(now)

    async def close(self, *, cancel: bool = False, timeout: float | None = None) -> None:  # noqa: ASYNC109
        self.close_sync(cancel=cancel, timeout=timeout)

    def close_sync(self, *, cancel: bool = False, timeout: float | None = None) -> None:
        self._state = "closed"
        for retired in self._retiring.values():
            _kill(retired)
        self._retiring.clear()
        for slot in self._slots:
            if slot.actor is not None:
                try:
                    _ray().kill(slot.actor)
                except Exception:
                    pass
                slot.actor, slot.pid = None, None

    # ------------------------------------------------------------------ recycling
    def _recycle_reason(self, slot: _Slot) -> str | None:
        c = self.config
        if c.max_requests is not None and slot.calls_done >= c.max_requests:
            return "max_requests"
        if c.ttl is not None and time.monotonic() - slot.spawned_at >= c.ttl:
            return "ttl"
        if c.recycle_rss_mb is not None and (slot.rss_mb or 0.0) > c.recycle_rss_mb:
            return "rss"
        return None

    def _maybe_recycle(self, slot: _Slot) -> None:
        """Replace ``slot``'s actor if it is due (the local pool's rules); a session without a
        recipe keeps its actor until it closes. Calls still running on the old actor finish
        there; new calls start a fresh one."""
        if slot.actor is None or self._state == "closed":
            return
        reason = self._recycle_reason(slot)
        if reason is None:
            return
        if not all(has for has, gen in slot.sessions.values() if gen == slot.generation):
            return
        actor = slot.actor
        slot.actor, slot.pid = None, None
        self._recycles[reason] += 1
        if self._inflight[id(actor)]:
            self._retiring[id(actor)] = actor
        else:
            _kill(actor)

    def _call_ended(self, slot: _Slot, actor: Any) -> None:
        key = id(actor)
        self._inflight[key] -= 1
        if self._inflight[key] <= 0:
            del self._inflight[key]
            retired = self._retiring.pop(key, None)
            if retired is not None:
                _kill(retired)
        if slot.actor is actor:
            slot.calls_done += 1
            self._maybe_recycle(slot)

    # ------------------------------------------------------------------ calls
    def _pick(self) -> _Slot:
        least = min(slot.busy for slot in self._slots)
        candidates = [slot for slot in self._slots if slot.busy == least]
        return candidates[next(self._rr) % len(candidates)]

    def _check_health(self) -> None:
        if self._state == "closed":
            raise PoolClosed(f"pool {self.name!r} is closed", pool=self.name)
        if len(self._restarts) > self.config.max_restarts:
            raise PoolUnhealthy(
                f"pool {self.name!r}: {len(self._restarts)} Ray actors died within "
                f"{self.config.restart_window:g} s",
                pool=self.name,
                last_error="actor restarts",
            )

    async def _drive(
        self,
        slot: _Slot,
        method: str,
        args: list[Any],
        kwargs: dict[str, Any],
        session: str | None,
        timeout: float | None,  # noqa: ASYNC109 (the deadline crosses processes)
        callbacks: dict[str, Callable[..., Any]],
        on_item: Callable[[Any], Awaitable[None]] | None = None,
    ) -> Any:
        """One call on ``slot``'s actor: ``run`` returns the outcome; a stream, or a call still
        running after :data:`_FIRST_POLL`, also has its events polled (items, callbacks)."""
        ray = _ray()
        self._check_health()
        self._maybe_recycle(slot)  # ttl, or a memory report from the last call
        await self._ensure_actor(slot)
        actor, pid = slot.actor, slot.pid
        cid = next(self._ids)
        started = time.monotonic()
        deadline = None if timeout is None else started + timeout
        stream = on_item is not None
        handlers = {**self._callbacks, **callbacks}
        names = frozenset(handlers)
        window = self.config.stream_window
        blob = dumps((cid, method, args, kwargs, session, timeout, window, stream, names))
        # events to read while it runs: items, callback requests, the memory cap
        watch = stream or bool(handlers) or self._memory_cap
        slot.busy += 1
        self._inflight[id(actor)] += 1
        ref = actor.run.remote(blob)
        outcome: asyncio.Future[Any] = asyncio.wrap_future(ref.future())
        outcome.add_done_callback(_observe)
        try:
            if not stream:
                cap = _FIRST_POLL if watch else None
                await asyncio.wait((outcome,), timeout=_until(deadline, cap))
            if watch and (stream or not outcome.done()):
                await self._events(slot, actor, pid, cid, deadline, outcome, handlers, on_item)
            if not outcome.done():
                await asyncio.wait((outcome,), timeout=_until(deadline, None))
            if not outcome.done():
                raise self._timed_out(slot, method, timeout)
            event = pickle.loads(outcome.result())
            kind = event[0]
            if kind == "limit":
                raise self._over_limit(slot, actor, pid, event[2])
            if slot.actor is actor and event[-1] is not None:
                slot.rss_mb = event[-1]
            if kind == "error":
                _, remote_type, message, remote_tb, _ = event
                raise RemoteError(
                    f"{remote_type}: {message}",
                    remote_type=remote_type,
                    remote_traceback=remote_tb,
                )
            self._calls += 1
            self._latencies = [*self._latencies[-999:], time.monotonic() - started]
            return event[1]
        except asyncio.CancelledError:
            if slot.actor is actor:
                actor.cancel.remote(cid)
            raise
        except ray.exceptions.RayActorError as exc:
            if slot.actor is actor:
                self._lost(slot)
            raise WorkerCrashed(
                f"the Ray actor (pid {pid}) of pool {self.name!r} died during {method!r}: "
                f"{_cause(exc)}",
                pool=self.name,
                pid=pid,
                signal=None,
                exitcode=None,
            ) from None
        finally:
            slot.busy -= 1
            self._call_ended(slot, actor)

    async def _events(
        self,
        slot: _Slot,
        actor: Any,
        pid: int | None,
        cid: int,
        deadline: float | None,
        outcome: asyncio.Future[Any],
        callbacks: dict[str, Callable[..., Any]],
        on_item: Callable[[Any], Awaitable[None]] | None,
    ) -> None:
        """Poll the call's events until ``done`` (or the deadline): streamed items to
        ``on_item``, parent-callback requests answered, a memory ``limit`` raised."""
        while deadline is None or time.monotonic() < deadline:
            events = await actor.poll.remote(cid, _until(deadline, _POLL))
            for event in events:
                kind = event[0]
                if kind == "done":
                    return
                if kind == "item" and on_item is not None:
                    await on_item(event[1])
                elif kind == "limit":
                    if outcome.done():
                        return  # ``run`` ended: its outcome says the rest
                    raise self._over_limit(slot, actor, pid, event[2])
                elif kind == "parent_call":
                    _, cbid, name, cb_args, cb_kwargs = event
                    ok, value = await _callback(callbacks, name, cb_args, cb_kwargs)
                    await actor.reply.remote(cid, cbid, ok, value)

    def _timed_out(self, slot: _Slot, method: str, timeout: float | None) -> ExecutionTimeout:
        self._lost(slot)
        return ExecutionTimeout(
            f"call {method!r} on pool {self.name!r} exceeded its {timeout:g} s "
            "timeout; its Ray actor was killed and will be replaced",
            pool=self.name,
            timeout=timeout,
        )

    def _over_limit(
        self, slot: _Slot, actor: Any, pid: int | None, mb: float
    ) -> ResourceLimitExceeded:
        if slot.actor is actor:
            self._lost(slot)
        else:
            _kill(actor)
        cap = self.config.memory_limit_mb
        return ResourceLimitExceeded(
            f"the Ray actor (pid {pid}) of pool {self.name!r} exceeded its memory "
            f"limit ({cap} MB, at {mb:.0f} MB) and was replaced",
            pool=self.name,
            pid=pid,
            resource="memory",
            limit=cap,
        )

    async def call(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        session = kwargs.pop("session", None)
        if session is not None:
            return await session.call(method, *args, **kwargs)
        timeout = kwargs.pop("timeout", self.config.request_timeout)
        kwargs.pop("idempotent", None)
        return await self._drive(self._pick(), method, list(args), kwargs, None, timeout, {})

    def call_sync(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        from dspex._sync import run_sync

        return run_sync(self.call(method, *args, **kwargs))

    def stream(self, method: str, /, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        session = kwargs.pop("session", None)
        return self._stream(method, list(args), kwargs, session)

    async def _stream(
        self, method: str, args: list[Any], kwargs: dict[str, Any], session: RaySession | None
    ) -> AsyncIterator[Any]:
        timeout = kwargs.pop("timeout", self.config.request_timeout)
        kwargs.pop("window", None)
        items: asyncio.Queue[tuple[bool, Any]] = asyncio.Queue(self.config.stream_window)

        async def on_item(item: Any) -> None:
            await items.put((True, item))

        if session is not None:
            slot = await session._pinned()
            sid: str | None = session.id
            callbacks = session._callbacks
        else:
            slot, sid, callbacks = self._pick(), None, {}
        task = asyncio.ensure_future(
            self._drive(slot, method, args, kwargs, sid, timeout, callbacks, on_item)
        )
        task.add_done_callback(lambda _: items.put_nowait((False, None)))
        try:
            while True:
                more, item = await items.get()
                if not more:
                    task.result()  # raises the call's error, if any
                    return
                yield item
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    def session(
        self,
        *,
        mode: Any = "hint",
        ttl: float | None = None,
        recipe: Callable[[Any], Awaitable[None]] | None = None,
    ) -> RaySession:
        limit = self.config.max_sessions
        if limit is not None and len(self._open_sessions) >= limit:
            raise PoolSaturated(
                f"pool {self.name!r} has {limit} open sessions (max_sessions)", pool=self.name
            )
        session = RaySession(self, mode=mode, ttl=ttl, recipe=recipe)
        self._open_sessions.add(session.id)
        return session

    def register_callback(self, name: str, fn: Callable[..., Any]) -> None:
        if not callable(fn):
            raise ConfigurationError(f"callback {name!r} must be callable")
        self._callbacks[name] = fn

    def stats(self) -> dict[str, Any]:
        lat = sorted(self._latencies)
        return {
            "name": self.name,
            "backend": "ray",
            "target": self.config.target,
            "state": self._state,
            "size": self.config.size,
            "workers": sum(1 for s in self._slots if s.actor is not None),
            "busy": sum(s.busy for s in self._slots),
            "queued": 0,
            "restarts": len(self._restarts),
            "recycles": dict(self._recycles),
            "calls": self._calls,
            "p50_ms": lat[len(lat) // 2] * 1e3 if lat else None,
            "p99_ms": lat[max(0, int(len(lat) * 0.99) - 1)] * 1e3 if lat else None,
            "pids": [s.pid for s in self._slots if s.pid is not None],
        }


_UNSUPPORTED = ("python", "cwd", "cpu_limit_s", "max_processes", "codec", "session_ttl")


def _warn_unsupported(config: PoolConfig, name: str) -> None:
    """Options the Ray backend cannot honour: said once, at pool creation, not ignored silently."""
    defaults = PoolConfig(target=config.target)
    unsupported = [o for o in _UNSUPPORTED if getattr(config, o) != getattr(defaults, o)]
    if config.memory_limit_mb is not None and config.memory_limit_kind == "address_space":
        unsupported.append("memory_limit_kind='address_space'")
    if unsupported:
        logger.warning(
            "pool %r runs on Ray, which does not apply: %s (see docs/ray.md)",
            name,
            ", ".join(unsupported),
        )


def _kill(actor: Any) -> None:
    try:
        _ray().kill(actor)
    except Exception:
        pass


async def _callback(
    callbacks: dict[str, Callable[..., Any]], name: str, args: list[Any], kwargs: dict[str, Any]
) -> tuple[bool, Any]:
    from dspex.pool.protocol import exception_payload

    fn = callbacks.get(name)
    if fn is None:
        return False, missing_callback(name)
    try:
        value = fn(*args, **kwargs)
        if inspect.isawaitable(value):
            value = await value
        return True, value
    except Exception as exc:
        return False, exception_payload(exc)


def _cause(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc.__cause__
    text = str(cause if cause is not None else exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__
