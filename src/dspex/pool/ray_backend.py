"""A pool whose workers are Ray actors: ``pools={"dspy": {"backend": "ray", "size": 4}}``.

Each actor imports the pool's ``target`` factory and serves the handler it builds, exactly
as a local worker process does: handler code sees the same
:func:`dspex.pool.worker.current_call` context (``session``, ``remaining()``,
``cancelled``, ``check()``, ``call_parent()``/``acall_parent()``), so the DSPy worker host
runs unchanged on a Ray cluster.

A call is a small protocol over Ray actor methods (the actor is threaded): ``start`` runs the
handler method in a thread of the actor; the parent ``poll``\\ s for events (streamed items,
parent-callback requests, the result or the error) and answers callbacks with ``reply``;
``cancel`` cancels it. The parent drives that loop with one async function that sync callers
reach through ``run_sync``.

Failure semantics follow the local pool: a call past its deadline gets
:class:`~dspex.errors.ExecutionTimeout` and its actor is killed and replaced; an actor that
dies costs the call it ran (:class:`~dspex.errors.WorkerCrashed`) and is replaced on next
use; sessions pin to one actor and, when it dies, are rebuilt on the replacement by their
recipe (or fail with :class:`~dspex.errors.SessionLost`); actors failing at startup make the
pool :class:`~dspex.errors.PoolUnhealthy`. Not (yet) supported on Ray: memory/CPU limits,
the fork server, ``max_requests``/``ttl`` recycling and session ``mode`` semantics other than
"pinned to one actor".
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import os
import queue
import sys
import threading
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from dspex.errors import (
    ConfigurationError,
    ExecutionTimeout,
    PoolClosed,
    PoolUnhealthy,
    RemoteError,
    SessionLost,
    WorkerCrashed,
)
from dspex.pool.config import PoolConfig

__all__ = ["RayPool", "RaySession"]

_POLL = 0.5  # seconds an actor's poll blocks waiting for an event


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigurationError(
            "the Ray pool backend needs the ray extra: pip install 'dspex[ray]'"
        ) from None
    return ray


# ---------------------------------------------------------------------------- actor side


class _RayCall:
    """``current_call()`` inside a Ray actor: the same surface as the local worker's."""

    def __init__(
        self, cid: int, method: str, session: str | None, timeout: float | None, window: int
    ) -> None:
        self.id = cid
        self.method = method
        self.session = session
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.events: queue.Queue[tuple[Any, ...]] = queue.Queue(maxsize=max(1, window))
        self._cancelled = False
        self._replies: dict[int, tuple[bool, Any]] = {}
        self._cond = threading.Condition()
        self._next_cb = itertools.count(1)
        self._task: asyncio.Task[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def remaining(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def check(self) -> None:
        from dspex.pool.worker import CallCancelled

        if self._cancelled:
            raise CallCancelled(f"call {self.id} ({self.method}) was cancelled by its caller")

    def call_parent(self, name: str, *args: Any, **kwargs: Any) -> Any:
        from dspex.pool.worker import CallCancelled

        cbid = next(self._next_cb)
        self.events.put(("parent_call", cbid, name, list(args), kwargs))
        with self._cond:
            while cbid not in self._replies:
                if self._cancelled:
                    raise CallCancelled(f"call {self.id} was cancelled while waiting for {name!r}")
                self._cond.wait(0.1)
            ok, value = self._replies.pop(cbid)
        if ok:
            return value
        from dspex.pool.protocol import payload_error

        raise payload_error(value)  # the parent's error, typed (the pool's one error channel)

    async def acall_parent(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(self.call_parent, name, *args, **kwargs)

    def reply(self, cbid: int, ok: bool, value: Any) -> None:
        with self._cond:
            self._replies[cbid] = (ok, value)
            self._cond.notify_all()

    def cancel(self) -> None:
        self._cancelled = True
        loop, task = self._loop, self._task
        if loop is not None and task is not None:
            loop.call_soon_threadsafe(task.cancel)
        with self._cond:
            self._cond.notify_all()


def _qualname(exc: BaseException) -> str:
    cls = type(exc)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


class _Host:
    """The body of a worker actor (wrapped with ``ray.remote`` when a pool starts)."""

    def __init__(self, target: str, env: dict[str, str], pythonpath: list[str]) -> None:
        os.environ.update(env)
        for path in reversed(pythonpath):
            if path not in sys.path:
                sys.path.insert(0, path)
        from dspex.pool.worker import _import_target

        self.handler = _import_target(target)()
        self.calls: dict[int, _RayCall] = {}
        self.lock = threading.Lock()

    def ready(self) -> int:
        return os.getpid()

    def start(
        self,
        cid: int,
        method: str,
        args: list[Any],
        kwargs: dict[str, Any],
        session: str | None,
        timeout: float | None,
        window: int,
        wait: float,
    ) -> list[tuple[Any, ...]]:
        """Start the call; its first events (a quick call's result: one round trip)."""
        call = _RayCall(cid, method, session, timeout, window)
        with self.lock:
            self.calls[cid] = call
        threading.Thread(target=self._run, args=(call, args, kwargs), daemon=True).start()
        return self.poll(cid, wait)

    def _run(self, call: _RayCall, args: list[Any], kwargs: dict[str, Any]) -> None:
        from dspex.pool.worker import _current

        token = _current.set(call)  # type: ignore[arg-type]
        try:
            fn = getattr(self.handler, call.method, None)
            if fn is None or call.method.startswith("_"):
                raise AttributeError(f"the handler has no method {call.method!r}")
            result = fn(*args, **kwargs)
            if inspect.isawaitable(result) or inspect.isasyncgen(result):
                result = asyncio.run(self._run_async(call, result))
            elif inspect.isgenerator(result):
                for item in result:
                    call.check()
                    call.events.put(("item", item))
                result = None
            call.events.put(("result", result))
        except BaseException as exc:
            call.events.put(("error", _qualname(exc), str(exc), traceback.format_exc()))
        finally:
            _current.reset(token)

    async def _run_async(self, call: _RayCall, result: Any) -> Any:
        call._loop = asyncio.get_running_loop()

        async def drain() -> Any:
            if inspect.isasyncgen(result):
                async for item in result:
                    call.check()
                    await asyncio.to_thread(call.events.put, ("item", item))
                return None
            return await result

        call._task = asyncio.ensure_future(drain())
        return await call._task

    def poll(self, cid: int, wait: float) -> list[tuple[Any, ...]]:
        call = self.calls.get(cid)
        if call is None:
            return [("error", "dspex.errors.ProtocolError", f"unknown call {cid}", "")]
        events: list[tuple[Any, ...]] = []
        try:
            events.append(call.events.get(timeout=wait))
            while True:
                events.append(call.events.get_nowait())
        except queue.Empty:
            pass
        if events and events[-1][0] in ("result", "error"):
            with self.lock:
                self.calls.pop(cid, None)
        return events

    def reply(self, cid: int, cbid: int, ok: bool, value: Any) -> None:
        call = self.calls.get(cid)
        if call is not None:
            call.reply(cbid, ok, value)

    def cancel(self, cid: int) -> None:
        call = self.calls.get(cid)
        if call is not None:
            call.cancel()

    def drop_session(self, session_id: str) -> None:
        drop = getattr(self.handler, "drop_session", None)
        if callable(drop):
            drop(session_id)


# ---------------------------------------------------------------------------- parent side


class _Slot:
    """One actor position of the pool; the actor is replaced when it dies."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.actor: Any = None
        self.pid: int | None = None
        self.generation = 0
        self.busy = 0


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
        slot = self._slot
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
            self._actor_cls = ray.remote(max_concurrency=64, max_restarts=0)(_Host)
        return ray

    async def _ensure_actor(self, slot: _Slot) -> None:
        if self._state == "closed":
            raise PoolClosed(f"pool {self.name!r} is closed", pool=self.name)
        if slot.actor is not None:
            return
        ray = self._init_ray()
        config = self.config
        actor = self._actor_cls.options(num_cpus=0).remote(
            config.target, dict(config.env), list(config.pythonpath)
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
        for slot in self._slots:
            if slot.actor is not None:
                try:
                    _ray().kill(slot.actor)
                except Exception:
                    pass
                slot.actor, slot.pid = None, None

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
        """One call on ``slot``'s actor: start, poll events, answer callbacks, until done."""
        ray = _ray()
        self._check_health()
        await self._ensure_actor(slot)
        actor, pid = slot.actor, slot.pid
        cid = next(self._ids)
        started = time.monotonic()
        deadline = None if timeout is None else started + timeout
        slot.busy += 1
        try:
            events = await actor.start.remote(
                cid, method, args, kwargs, session, timeout, self.config.stream_window,
                self._wait(deadline),
            )  # fmt: skip
            while True:
                for event in events:
                    kind = event[0]
                    if kind == "item" and on_item is not None:
                        await on_item(event[1])
                    elif kind == "parent_call":
                        _, cbid, name, cb_args, cb_kwargs = event
                        ok, value = await _callback(
                            {**self._callbacks, **callbacks}, name, cb_args, cb_kwargs
                        )
                        await actor.reply.remote(cid, cbid, ok, value)
                    elif kind == "result":
                        self._calls += 1
                        self._latencies = [*self._latencies[-999:], time.monotonic() - started]
                        return event[1]
                    elif kind == "error":
                        _, remote_type, message, remote_tb = event
                        raise RemoteError(
                            f"{remote_type}: {message}",
                            remote_type=remote_type,
                            remote_traceback=remote_tb,
                        )
                if deadline is not None and time.monotonic() >= deadline:
                    self._lost(slot)
                    raise ExecutionTimeout(
                        f"call {method!r} on pool {self.name!r} exceeded its {timeout:g} s "
                        "timeout; its Ray actor was killed and will be replaced",
                        pool=self.name,
                        timeout=timeout,
                    )
                events = await actor.poll.remote(cid, self._wait(deadline))
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

    @staticmethod
    def _wait(deadline: float | None) -> float:
        """How long the actor may block collecting events (never past the deadline)."""
        if deadline is None:
            return _POLL
        return max(0.0, min(_POLL, deadline - time.monotonic()))

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
        return RaySession(self, mode=mode, ttl=ttl, recipe=recipe)

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
            "calls": self._calls,
            "p50_ms": lat[len(lat) // 2] * 1e3 if lat else None,
            "p99_ms": lat[max(0, int(len(lat) * 0.99) - 1)] * 1e3 if lat else None,
            "pids": [s.pid for s in self._slots if s.pid is not None],
        }


async def _callback(
    callbacks: dict[str, Callable[..., Any]], name: str, args: list[Any], kwargs: dict[str, Any]
) -> tuple[bool, Any]:
    from dspex.pool.protocol import exception_payload

    fn = callbacks.get(name)
    if fn is None:
        return False, exception_payload(
            LookupError(f"no parent callback named {name!r} is registered")
        )
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
