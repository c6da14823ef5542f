"""The actor side of the Ray pool backend (:mod:`dspex.pool.ray_backend`).

``_Host`` is the body of a worker actor: it builds the pool's handler, runs each call in a
thread of the (threaded) actor with a :class:`_RayCall` as ``current_call()``, and hands the
parent events through ``poll``: streamed items, parent-callback requests, the result or the
error, the actor's resident memory when the pool recycles or caps by RSS, and a ``limit``
event when the memory cap was passed (the parent then kills the actor).
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import os
import queue
import resource
import sys
import threading
import time
import traceback
from typing import Any

from dspex.errors import RemoteError

__all__ = ["Limits", "_Host", "_RayCall", "_qualname", "rss_mb"]

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float | None:
    """This process's resident memory in MiB (``None`` where /proc is missing)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE / (1024 * 1024)
    except (OSError, IndexError, ValueError):
        return None


Limits = dict[str, Any]
"""``memory_limit_mb``, ``memory_check_interval``, ``report_rss``, ``open_files_limit``."""


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
        remote_type, message = value
        raise RemoteError(
            f"parent callback {remote_type}: {message}",
            remote_type=remote_type,
            remote_traceback="",
        )

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
        self.lock = threading.Lock()
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
            self._report_rss(call)
            call.events.put(("result", result))
        except BaseException as exc:
            self._report_rss(call)
            call.events.put(("error", _qualname(exc), str(exc), traceback.format_exc()))
        finally:
            _current.reset(token)

    def _report_rss(self, call: _RayCall) -> None:
        if self.report_rss:
            call.events.put(("rss", rss_mb()))

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
        if self.limit_hit is not None:
            return [("limit", "memory", self.limit_hit)]
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
