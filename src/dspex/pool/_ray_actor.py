"""The actor side of the Ray pool backend (:mod:`dspex.pool.ray_backend`).

``_Host`` is the body of a worker actor: it builds the pool's handler and serves each call
with one actor method, ``run``, that executes the handler method in the actor's own thread
(the actor is threaded) with a :class:`_RayCall` as ``current_call()`` and *returns* the
outcome: the result (with the actor's resident memory when the pool recycles by RSS), the
error, or ``limit`` when the memory cap was passed (the parent then kills the actor). A quick
call is one Ray actor round trip.

Whatever a call must say *while* it runs goes through its event queue, which the parent reads
with ``poll`` (methods of the ``control`` concurrency group, so they never wait behind running
calls): streamed items (``stream=True`` calls), parent-callback requests (answered with
``reply``), the memory-cap ``limit``, and ``done`` once the call ended. The parent polls only a
stream, or a call that did not return within a few milliseconds.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import itertools
import os
import pickle
import queue
import resource
import sys
import threading
import time
import traceback
from typing import Any

__all__ = ["Limits", "_Host", "_RayCall", "_qualname", "dumps", "missing_callback", "rss_mb"]

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float | None:
    """This process's resident memory in MiB (``None`` where /proc is missing)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE / (1024 * 1024)
    except (OSError, IndexError, ValueError):
        return None


def dumps(value: Any) -> bytes:
    """``value`` pickled (cloudpickle when plain pickle cannot: lambdas, local classes)."""
    try:
        return pickle.dumps(value, protocol=5)
    except Exception:
        import cloudpickle

        return bytes(cloudpickle.dumps(value, protocol=5))


def missing_callback(name: str) -> dict[str, Any]:
    """The error payload of a parent callback nobody registered (parent and actor alike)."""
    from dspex.pool.protocol import exception_payload

    return exception_payload(LookupError(f"no parent callback named {name!r} is registered"))


Limits = dict[str, Any]
"""``memory_limit_mb``, ``memory_check_interval``, ``report_rss``, ``open_files_limit``."""


class _RayCall:
    """``current_call()`` inside a Ray actor: the same surface as the local worker's."""

    def __init__(
        self,
        cid: int,
        method: str,
        session: str | None,
        timeout: float | None,
        window: int,
        stream: bool = False,
        names: frozenset[str] | None = None,
    ) -> None:
        self.id = cid
        self.names = names
        """The parent callbacks registered when the call started (``None``: not known)."""
        self.method = method
        self.session = session
        self.stream = stream
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

        if self.names is not None and name not in self.names:
            from dspex.pool.protocol import payload_error

            raise payload_error(missing_callback(name))  # what the parent would answer
        cbid = next(self._next_cb)
        self.put(("parent_call", cbid, name, list(args), kwargs))
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

    def put(self, event: tuple[Any, ...]) -> None:
        """Queue ``event`` for the parent (waits while the stream window is full; gives up
        once the call is cancelled: nobody reads it any more)."""
        while True:
            try:
                self.events.put(event, timeout=0.1)
                return
            except queue.Full:
                if self._cancelled:
                    return

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

    def __init__(
        self, target: str, env: dict[str, str], pythonpath: list[str], limits: Limits | None = None
    ) -> None:
        os.environ.update(env)
        for path in reversed(pythonpath):
            if path not in sys.path:
                sys.path.insert(0, path)
        limits = dict(limits or {})
        files = limits.get("open_files_limit")
        if files is not None:
            _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            cap = int(files) if hard == resource.RLIM_INFINITY else min(int(files), hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (cap, hard))
        from dspex.pool.worker import _import_target

        self.handler = _import_target(target)()
        self.calls: dict[int, _RayCall] = {}
        self.lock = threading.Condition()
        self.ended: collections.OrderedDict[int, bool] = collections.OrderedDict()
        """Recently ended calls (-> whether cancelled before they started): ``poll`` and
        ``run`` travel in different concurrency groups, so either may arrive first."""
        self.report_rss = bool(limits.get("report_rss"))
        self.limit_hit: float | None = None
        cap_mb = limits.get("memory_limit_mb")
        if cap_mb is not None:
            interval = float(limits.get("memory_check_interval") or 0.05)
            threading.Thread(
                target=self._watch_memory, args=(float(cap_mb), interval), daemon=True
            ).start()

    def _watch_memory(self, cap_mb: float, interval: float) -> None:
        """Flag the actor once its RSS passes the cap; the parent kills it on its next poll."""
        while self.limit_hit is None:
            mb = rss_mb()
            if mb is not None and mb > cap_mb:
                self.limit_hit = mb
                return
            time.sleep(interval)

    def ready(self) -> int:
        return os.getpid()

    def run(self, payload: bytes) -> bytes:
        """Run the call here and return its outcome (see the module docstring). The call and
        its outcome travel as one pickled blob each: Ray serializes every argument of an actor
        call separately, which costs more than the call itself for eight small ones."""
        cid, method, args, kwargs, session, timeout, window, stream, names = pickle.loads(payload)
        call = _RayCall(cid, method, session, timeout, window, stream, names)
        with self.lock:
            if cid in self.ended:  # cancelled before it started
                return dumps(("error", "dspex.pool.worker.CallCancelled", "cancelled", "", None))
            self.calls[cid] = call
            self.lock.notify_all()
        try:
            outcome = self._execute(call, args, kwargs)
        finally:
            call.put(("done",))
            if not stream:  # nothing left for a poll to read: a late poll sees "done"
                self._end(cid)
        if self.limit_hit is not None:
            outcome = ("limit", "memory", self.limit_hit)
        try:
            return dumps(outcome)
        except Exception as exc:
            name = type(outcome[1]).__name__
            message = f"the result of {method!r} ({name}) cannot be pickled: {exc}"
            return dumps(("error", "dspex.errors.ProtocolError", message, "", outcome[-1]))

    def _execute(self, call: _RayCall, args: list[Any], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        from dspex.pool.worker import _current

        token = _current.set(call)  # type: ignore[arg-type]
        try:
            fn = getattr(self.handler, call.method, None)
            if fn is None or call.method.startswith("_"):
                raise AttributeError(f"the handler has no method {call.method!r}")
            result = fn(*args, **kwargs)
            if inspect.isawaitable(result) or inspect.isasyncgen(result):
                result = asyncio.run(_run_async(call, result))
            elif inspect.isgenerator(result):
                for item in result:
                    call.check()
                    if call.stream:
                        call.put(("item", item))
                result = None
            return ("result", result, self._rss())
        except BaseException as exc:
            return ("error", _qualname(exc), str(exc), traceback.format_exc(), self._rss())
        finally:
            _current.reset(token)

    def _rss(self) -> float | None:
        return rss_mb() if self.report_rss else None

    def poll(self, cid: int, wait: float) -> list[tuple[Any, ...]]:
        """The call's events so far (blocks up to ``wait`` s for the first); ``done`` last
        once the call ended; ``limit`` when the actor passed its memory cap."""
        if self.limit_hit is not None:
            return [("limit", "memory", self.limit_hit)]
        with self.lock:
            self.lock.wait_for(lambda: cid in self.calls or cid in self.ended, wait)
            call = self.calls.get(cid)
            if call is None:
                return [("done",)] if cid in self.ended else []  # ended / not started yet
        events: list[tuple[Any, ...]] = []
        try:
            events.append(call.events.get(timeout=wait))
            while events[-1][0] != "done":
                events.append(call.events.get_nowait())
        except queue.Empty:
            pass
        if events and events[-1][0] == "done":
            self._end(cid)
        return events

    def _end(self, cid: int, early: bool = False) -> _RayCall | None:
        with self.lock:
            call = self.calls.pop(cid, None)
            self.ended[cid] = early
            while len(self.ended) > 4096:
                self.ended.popitem(last=False)
            self.lock.notify_all()
        return call

    def reply(self, cid: int, cbid: int, ok: bool, value: Any) -> None:
        call = self.calls.get(cid)
        if call is not None:
            call.reply(cbid, ok, value)

    def cancel(self, cid: int) -> None:
        call = self._end(cid, early=cid not in self.calls)  # its parent reads no more events
        if call is not None:
            call.cancel()

    def drop_session(self, session_id: str) -> None:
        drop = getattr(self.handler, "drop_session", None)
        if callable(drop):
            drop(session_id)


async def _run_async(call: _RayCall, result: Any) -> Any:
    """Await a coroutine handler / drain an async-generator one, cancellable by ``call``.
    (A function, not a method: one ``async def`` method would make Ray run the whole actor
    as an asyncio actor, its sync methods on the event loop.)"""
    call._loop = asyncio.get_running_loop()

    async def drain() -> Any:
        if inspect.isasyncgen(result):
            async for item in result:
                call.check()
                if call.stream:
                    await asyncio.to_thread(call.put, ("item", item))
            return None
        return await result

    call._task = asyncio.ensure_future(drain())
    return await call._task
