"""The worker side of a pool: serve one handler object over a frame channel.

A worker imports ``PoolConfig.target`` (``"module:factory"``), calls ``factory()`` and answers
``Call`` messages by running ``handler.<method>(*args, **kwargs)`` one at a time. Async methods
run on the worker's own event loop; generator methods stream items under the parent's credit
window. Code running inside a call reaches its context through :func:`current_call`::

    from dspex.pool.worker import current_call

    class Handler:
        def work(self, n):
            call = current_call()
            for i in range(n):
                if call.cancelled:           # the caller went away
                    break
                score = call.call_parent("metric", i)   # a callback registered by the parent
            return call.session               # the session id (None outside sessions)

In template mode the process is the fork server (:mod:`dspex.pool.template`).

Only the standard library and ``msgpack`` are needed here.
"""

from __future__ import annotations

import asyncio
import contextvars
import errno
import inspect
import json
import os
import signal
import socket
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any

from dspex.errors import RemoteError
from dspex.pool.protocol import (
    _HEADER,
    Call,
    Cancel,
    Codec,
    Credit,
    DropSession,
    End,
    Error,
    FrameBuffer,
    Item,
    Message,
    ParentCall,
    ParentReply,
    Ready,
    Shutdown,
    decode,
    load_codec,
    payload_error,
)
from dspex.pool.worker_setup import (
    WORKER_COMM,
    WORKER_ENV,
    _apply_limits,
    _die_with_parent,
    _init_failed,
    _preload,
    _qualname,
    _set_name,
)
from dspex.pool.worker_setup import _import_target as _import_target  # (the Ray backend's)

__all__ = ["CallCancelled", "CallContext", "current_call", "main"]

_RECV = 1 << 18
_PLAIN = frozenset({str, int, float, bool, bytes, type(None), list, dict, tuple})
"""Result types that are never awaitables or generators (exactly these, not subclasses)."""


class CallCancelled(Exception):
    """Raised inside a worker call whose caller cancelled it (see :meth:`CallContext.check`)."""


class _ParentGone(Exception):
    pass


class CallContext:
    """What code inside a worker call can know and do about that call."""

    __slots__ = (
        "_cancelled",
        "_channel",
        "_event",
        "_next_cb",
        "_replies",
        "_task",
        "credits",
        "deadline",
        "id",
        "method",
        "session",
    )

    def __init__(self, channel: _Channel, msg: Call) -> None:
        # (fields by index: a NamedTuple's field names are unspecialized attribute lookups)
        _, self.id, self.method, _, _, timeout, self.session, self.credits = msg
        self._channel = channel
        self.deadline: float | None = None if timeout is None else time.monotonic() + timeout
        self._cancelled = False
        self._replies: dict[int, ParentReply] = {}
        self._next_cb = 0
        self._task: asyncio.Task[Any] | None = None
        self._event: asyncio.Event | None = None

    def remaining(self) -> float | None:
        """Seconds left before the parent kills this call (None: no deadline)."""
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    @property
    def cancelled(self) -> bool:
        """Whether the caller cancelled this call (checks the channel without blocking)."""
        if not self._cancelled:
            self._channel.poll()
        return self._cancelled

    def check(self) -> None:
        """Raise :class:`CallCancelled` if the caller cancelled this call."""
        if self.cancelled:
            raise CallCancelled(f"call {self.id} ({self.method}) was cancelled by its caller")

    def _ask(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
        self._next_cb += 1
        self._channel.send(
            ParentCall("parent_call", self.id, self._next_cb, name, list(args), kwargs)
        )
        return self._next_cb

    def _answer(self, cbid: int) -> Any:
        reply = self._replies.pop(cbid)
        if reply.ok:
            return reply.value
        if isinstance(reply.value, dict):  # the parent's error, typed (see exception_payload)
            raise payload_error(reply.value)
        raise RemoteError(f"parent callback failed: {reply.value!r}")

    def call_parent(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the function the parent registered as ``name`` (for this session) and wait."""
        cbid = self._ask(name, args, kwargs)
        while cbid not in self._replies:
            if self._cancelled:
                raise CallCancelled(f"call {self.id} was cancelled while waiting for {name!r}")
            self._channel.fill()
        return self._answer(cbid)

    async def acall_parent(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """:meth:`call_parent` for async handler methods (does not block the worker's loop)."""
        cbid = self._ask(name, args, kwargs)
        event = self._event
        assert event is not None, "acall_parent is only available inside async handler methods"
        while cbid not in self._replies:
            event.clear()
            await event.wait()
        return self._answer(cbid)

    def _wait_credit(self) -> None:
        while self.credits <= 0 and not self._cancelled:
            self._channel.fill()

    async def _await_credit(self) -> None:
        event = self._event
        assert event is not None
        while self.credits <= 0 and not self._cancelled:
            event.clear()
            await event.wait()

    def _on_control(self, msg: Message) -> None:
        if isinstance(msg, Cancel):
            self._cancelled = True
            if self._task is not None:
                self._task.cancel()
        elif isinstance(msg, Credit):
            self.credits += msg.n
        elif isinstance(msg, ParentReply):
            self._replies[msg.id] = msg
        if self._event is not None:
            self._event.set()


_current: contextvars.ContextVar[CallContext | None] = contextvars.ContextVar(
    "dspex_pool_call", default=None
)


def current_call() -> CallContext:
    """The context of the call running in this worker (``RuntimeError`` outside a call)."""
    ctx = _current.get()
    if ctx is None:
        raise RuntimeError("current_call() is only available inside a pool worker call")
    return ctx


class _Channel:
    """Blocking frame I/O on the worker's end of the socket pair."""

    def __init__(self, sock: socket.socket, codec: Codec) -> None:
        self.sock = sock
        self.codec = codec
        self.buf = FrameBuffer()
        self.inbox: deque[Message] = deque()
        self.active: CallContext | None = None
        self.skip: set[int] = set()  # queued calls cancelled before they started

    def send(self, msg: tuple[Any, ...]) -> None:
        try:
            self.sock.sendall(self.codec.frame(msg))
        except OSError as exc:
            raise _ParentGone from exc

    def _route(self, data: bytes) -> None:
        loads = self.codec.loads
        for body in self.buf.feed(data):
            msg = decode(loads(body))
            kind = msg[0]
            if kind == "call":
                self.inbox.append(msg)
                continue
            if kind == "cancel" or kind == "credit" or kind == "parent_reply":
                assert isinstance(msg, Cancel | Credit | ParentReply)
                active = self.active
                if active is not None and (kind == "parent_reply" or msg.id == active.id):
                    active._on_control(msg)
                elif kind == "cancel" and any(
                    m[0] == "call" and m[1] == msg.id for m in self.inbox
                ):  # a call pipelined behind the running one: never start it
                    self.skip.add(msg.id)
            else:
                self.inbox.append(msg)

    def fill(self) -> None:
        """Block until some bytes arrive and route them."""
        try:
            data = self.sock.recv(_RECV)
        except OSError as exc:
            raise _ParentGone from exc
        if not data:
            raise _ParentGone
        self._route(data)

    def poll(self) -> None:
        """Route whatever has arrived, without blocking."""
        while True:
            try:
                data = self.sock.recv(_RECV, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError as exc:
                raise _ParentGone from exc
            if not data:
                raise _ParentGone
            self._route(data)

    def next_message(self) -> Message:
        while not self.inbox:
            self.fill()
        return self.inbox.popleft()


def _limit_of(exc: BaseException) -> str | None:
    if isinstance(exc, MemoryError):
        return "memory"
    if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE):
        return "files"
    return None


class _Server:
    def __init__(self, channel: _Channel, handler: Any) -> None:
        self.channel = channel
        self.handler = handler
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop

    def serve(self) -> None:
        channel = self.channel
        inbox = channel.inbox
        while True:
            while not inbox:
                channel.fill()
            msg = inbox.popleft()
            if msg[0] == "call":
                assert isinstance(msg, Call)
                self.run_call(msg)
            elif isinstance(msg, DropSession):
                drop = getattr(self.handler, "drop_session", None)
                if drop is not None:
                    try:
                        drop(msg.session)
                    except Exception:
                        traceback.print_exc()
            elif isinstance(msg, Shutdown):
                close = getattr(self.handler, "close", None)
                if close is not None:
                    close()
                return

    def run_call(self, msg: Call) -> None:
        channel = self.channel
        ctx = CallContext(channel, msg)
        _, cid, method, args, kwargs, _, _, stream = msg  # (see CallContext.__init__)
        if channel.skip and cid in channel.skip:
            channel.skip.discard(cid)
            ctx._cancelled = True
            self._send_error(ctx, CallCancelled(f"call {cid} was cancelled before it started"))
            return
        channel.active = ctx
        token = _current.set(ctx)
        try:
            if method.startswith("_"):
                raise AttributeError(f"method {method!r} is private")
            fn = getattr(self.handler, method)
            result = fn(*args, **kwargs)
            if stream:
                self._stream(ctx, result)
                return
            if type(result) not in _PLAIN:  # (plain data needs none of these checks)
                if inspect.isawaitable(result):
                    result = self._run_async(ctx, result)
                if inspect.isgenerator(result) or inspect.isasyncgen(result):
                    raise TypeError(f"{method} returns a generator: call it with pool.stream()")
            body = channel.codec.packer.pack(("result", cid, result))  # (a Result, minus
            try:  # its __new__, and minus Channel.send's and Codec.frame's frames)
                channel.sock.sendall(_HEADER.pack(len(body)) + body)
            except OSError as exc:
                raise _ParentGone from exc
        except _ParentGone:
            raise
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            self._send_error(ctx, exc)
        finally:
            _current.reset(token)
            channel.active = None

    def _send_error(self, ctx: CallContext, exc: BaseException) -> None:
        limit = _limit_of(exc)
        cancelled = ctx._cancelled or isinstance(exc, CallCancelled | asyncio.CancelledError)
        text = "".join(traceback.format_exception(exc))
        message = str(exc)
        payload = self._payload(exc)
        if payload is not None:  # the handler's own (scrubbed) words replace ours
            message = str(payload.get("message", ""))
            text = str((payload.get("fields") or {}).get("remote_traceback", ""))
        try:
            frame = Error("error", ctx.id, _qualname(exc), message, text, limit, cancelled, payload)
            self.channel.send(frame)
        except _ParentGone:
            raise
        except Exception:  # e.g. the codec cannot encode something in the message
            self.channel.send(
                Error("error", ctx.id, _qualname(exc), repr(message), text, limit, cancelled, None)
            )
        if limit is not None:  # the process state is suspect: let the parent replace us
            sys.stdout.flush()
            os._exit(3)

    def _payload(self, exc: BaseException) -> dict[str, Any] | None:
        """``handler._error_payload(exc)``: a typed error for the parent to raise, if any."""
        hook = getattr(self.handler, "_error_payload", None)
        if hook is None:
            return None
        try:
            payload = hook(exc)
        except Exception:
            traceback.print_exc()
            return None
        return payload if isinstance(payload, dict) else None

    def _run_async(self, ctx: CallContext, awaitable: Any) -> Any:
        loop = self.loop

        async def runner() -> Any:
            ctx._event = asyncio.Event()
            return await awaitable

        task = loop.create_task(runner())
        ctx._task = task
        fd = self.channel.sock.fileno()

        def readable() -> None:
            try:
                self.channel.poll()
            except _ParentGone:
                os.killpg(os.getpgrp(), signal.SIGKILL)

        loop.add_reader(fd, readable)
        try:
            return loop.run_until_complete(task)
        finally:
            loop.remove_reader(fd)
            ctx._task = None

    def _stream(self, ctx: CallContext, result: Any) -> None:
        send = self.channel.send
        if inspect.isgenerator(result):
            gen = result
            try:
                for item in gen:
                    send(Item("item", ctx.id, item))
                    ctx.credits -= 1
                    ctx._wait_credit()
                    if ctx.cancelled:
                        raise CallCancelled(f"stream {ctx.id} was cancelled by its consumer")
            finally:
                gen.close()
        elif inspect.isasyncgen(result):
            agen = result

            async def pump() -> None:
                try:
                    async for item in agen:
                        send(Item("item", ctx.id, item))
                        ctx.credits -= 1
                        await ctx._await_credit()
                        if ctx._cancelled:
                            raise CallCancelled(f"stream {ctx.id} was cancelled by its consumer")
                finally:
                    await agen.aclose()

            self._run_async(ctx, pump())
        else:
            raise TypeError(f"{ctx.method} is not a generator; call it with pool.call()")
        send(End("end", ctx.id))


# ------------------------------------------------------------------ process setup


def _run_worker(fd: int, spec: dict[str, Any], factory: Callable[[], Any] | None) -> None:
    os.set_inheritable(fd, False)  # programs the handler runs must not hold our channel
    # marks inherited by all it starts (containment, see dspex.pool.template): the
    # environment (kept across exec) and the process name (kept across fork)
    os.environ[WORKER_ENV] = str(os.getpid())
    _set_name(f"{WORKER_COMM}{os.getpid()}")
    sock = socket.socket(fileno=fd)
    sock.setblocking(True)
    codec = Codec()
    try:
        codec = load_codec(spec.get("codec"))
        if factory is None:
            factory = _preload(spec)
        _apply_limits(spec)
        handler = factory()
    except BaseException as exc:
        _init_failed(sock, codec, exc)
        os._exit(1)
    channel = _Channel(sock, codec)
    info = {"executable": sys.executable, "version": sys.version.split()[0]}
    try:
        channel.send(Ready("ready", os.getpid(), info))
        _Server(channel, handler).serve()
    except _ParentGone:  # the parent is gone: take our process group (grandchildren) with us
        os.killpg(os.getpgrp(), signal.SIGKILL)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def main() -> None:
    """Entry point of a worker or template process (``python -m dspex.pool._boot``)."""
    spec: dict[str, Any] = json.loads(os.environ.pop("DSPEX_POOL_SPEC"))
    fd = int(os.environ.pop("DSPEX_POOL_FD"))
    _die_with_parent(spec["parent_pid"])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the parent, which stops us
    if spec.get("role") == "template":
        from dspex.pool.template import serve

        serve(fd, spec)
    else:
        _run_worker(fd, spec, None)
