"""Worker-to-parent callbacks: a running call asks the parent to run a registered function
(``current_call().call_parent(name, ...)``); the reply goes back on the worker's socket.

Sync callbacks run on the pool's small I/O executor; async ones on the caller's loop (or the
pool's). Session callbacks shadow pool-wide ones of the same name.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import Any

from dspex.errors import ConfigurationError
from dspex.pool.core import PoolCore
from dspex.pool.protocol import ParentCall, ParentReply, exception_payload
from dspex.pool.records import Worker

__all__ = ["Callbacks"]


class Callbacks(PoolCore):
    """Mixin: the pool-wide callback registry and the parent side of ``call_parent``."""

    def register_callback(self, name: str, fn: Callable[..., Any]) -> None:
        """A pool-wide function workers may call with ``current_call().call_parent(name, ...)``."""
        if not callable(fn):
            raise ConfigurationError(f"callback {name!r} must be callable")
        self._callbacks[name] = fn

    def _parent_call(self, w: Worker, msg: ParentCall) -> None:
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
            except (TypeError, ValueError) as exc:  # the codec cannot carry the result
                payload = exception_payload(exc, f"parent callback {msg.name!r}: ")
                w.send(self._codec.frame(ParentReply("parent_reply", msg.cbid, False, payload)))

        def failed(exc: BaseException) -> None:
            # one error channel: the worker raises the (typed) error this payload describes
            reply(False, exception_payload(exc))

        if fn is None:
            failed(LookupError(f"no parent callback named {msg.name!r}"))
            return
        if asyncio.iscoroutinefunction(fn):
            target = req.caller_loop if req is not None and req.caller_loop is not None else loop
            if target.is_closed():
                target = loop
            cfut = asyncio.run_coroutine_threadsafe(fn(*msg.args, **msg.kwargs), target)
        else:
            assert self._io.executor is not None
            cfut = self._io.executor.submit(fn, *msg.args, **msg.kwargs)

        def done(f: concurrent.futures.Future[Any]) -> None:
            exc = f.exception()
            if exc is None:
                loop.call_soon_threadsafe(reply, True, f.result())
            else:
                loop.call_soon_threadsafe(failed, exc)

        cfut.add_done_callback(done)
