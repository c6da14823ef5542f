"""``LMServer``: a real HTTP/1.1 server on 127.0.0.1 speaking OpenAI and Anthropic protocols.

It runs on its own thread and event loop (so sync and async tests can both use it), parses
HTTP with ``httptools`` (the parser uvicorn uses), keeps connections alive, records every
request, answers adapter-formatted prompts on its own (see :mod:`dspex.testing.answers`),
follows scripted replies and rules, and injects faults: error statuses with headers, delays,
byte-by-byte drip, hung and dropped connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import select
import selectors
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import orjson

from dspex.testing.answers import (
    ToolCallSpec,
    answer_messages,
    auto_tool_calls,
    read_prompt,
    render_reply,
)

__all__ = ["Fault", "LMServer", "RecordedRequest", "ToolCallReply"]


@dataclass(frozen=True)
class ToolCallReply:
    """A scripted reply that calls tools: ``ToolCallReply([("search", {"q": "x"})], text=None)``.

    Sent as ``tool_calls`` (OpenAI) or ``tool_use`` blocks (Anthropic), with ``text`` (if any)
    as the message content.
    """

    calls: list[tuple[str, Mapping[str, Any]]]
    text: str | None = None


Match = str | Callable[["RecordedRequest"], bool] | None
ReplySpec = str | Mapping[str, Any] | Callable[["RecordedRequest"], str] | ToolCallReply


@dataclass
class RecordedRequest:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float
    json: Any = None
    provider: str = "openai"

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.json.get("messages", [])) if isinstance(self.json, dict) else []

    @property
    def last_user_message(self) -> str:
        for m in reversed(self.messages):
            if m.get("role") == "user":
                c = m.get("content")
                return c if isinstance(c, str) else orjson.dumps(c).decode()
        return ""


@dataclass
class Fault:
    """A misbehaviour for the next ``times`` matching requests (``times=-1``: forever)."""

    status: int | None = None
    headers: dict[str, str] | None = None
    body: bytes | str | None = None
    delay: float = 0.0
    drip: float | None = None
    hang: bool = False
    drop: bool = False
    times: int = 1
    match: Match = None


@dataclass
class _Rule:
    match: Match
    reply: ReplySpec


def _matches(match: Match, request: RecordedRequest) -> bool:
    if match is None:
        return True
    if isinstance(match, str):
        return match in request.last_user_message
    return bool(match(request))


_REASONS = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    408: "Request Timeout", 409: "Conflict", 413: "Payload Too Large", 422: "Unprocessable Entity",
    429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout", 529: "Overloaded",
}  # fmt: skip


@dataclass
class _Response:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    chunks: list[bytes] | None = None  # SSE events (sent with chunked encoding)


Request = tuple[str, str, dict[str, str], bytes, float]  # method, path, headers, body, arrival


class _Connection(asyncio.Protocol):
    """One client connection; its requests are answered in order, one at a time (HTTP/1.1
    without pipelined replies).

    A request is recorded and answered as soon as its last byte is parsed, and its reply is
    written by a loop timer ``latency`` after that byte arrived (the reply is computed while
    the "LM" thinks: it leaves after ``latency``, not ``latency`` plus the server's own work).
    Only a fault that waits (delay, drip, hang) runs as a task.
    """

    def __init__(self, server: LMServer) -> None:
        import httptools

        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.backlog: deque[Request] = deque()  # parsed requests not answered yet
        self.busy = False  # a request is being answered (its reply not written yet)
        self.timer: asyncio.TimerHandle | None = None  # the pending reply's
        self.worker: asyncio.Task[None] | None = None  # the pending fault's

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._connections.discard(self)
        self.backlog.clear()
        if self.timer is not None:
            self.timer.cancel()
        if self.worker is not None:
            self.worker.cancel()

    def data_received(self, data: bytes) -> None:
        import httptools

        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._write_raw(
                400, b'{"error": {"message": "malformed HTTP request"}}', keep_alive=False
            )

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url, self.headers, self.body = b"", {}, []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method().decode()
        path = self.url.decode("latin-1").split("?", 1)[0]
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        self.backlog.append((method, path, self.headers, body, self.loop.time()))
        if not self.busy:
            self._next()

    # request handling
    def _next(self) -> None:
        """Answer the oldest waiting request unless one is being answered."""
        while self.backlog and not self.busy:
            transport = self.transport
            if transport is None or transport.is_closing():
                self.backlog.clear()
                return
            self.busy = True
            try:
                self._answer(*self.backlog.popleft())
            except Exception as exc:  # never let a bug kill the server thread
                self._crashed(exc)

    def _done(self) -> None:
        self.busy = False
        self._next()

    def _crashed(self, exc: Exception) -> None:
        self._write_raw(500, orjson.dumps({"error": {"message": f"LMServer error: {exc!r}"}}))
        self.busy = False

    def _answer(
        self, method: str, path: str, headers: dict[str, str], body: bytes, arrived: float
    ) -> None:
        server = self.server
        request = server._record(method, path, headers, body)
        fault = server._take_fault(request)
        if fault is not None and (
            fault.delay or fault.drop or fault.hang or fault.drip or fault.status is not None
        ):
            self.worker = self.loop.create_task(self._faulty(request, fault, arrived))
            return
        self._reply_at(server._respond(request), arrived + server.latency)

    def _reply_at(self, response: _Response, due: float) -> None:
        if due > self.loop.time():
            self.timer = self.loop.call_at(due, self._reply, response)
        else:
            self._reply(response)

    def _reply(self, response: _Response) -> None:
        self.timer = None
        try:
            self._write(response)
        except Exception as exc:  # pragma: no cover - writing prepared bytes
            self._crashed(exc)
        self._done()

    async def _faulty(self, request: RecordedRequest, fault: Fault, arrived: float) -> None:
        try:
            await self._misbehave(request, fault, arrived)
        except Exception as exc:
            self._crashed(exc)
        self.worker = None
        self._done()

    async def _misbehave(self, request: RecordedRequest, fault: Fault, arrived: float) -> None:
        transport = self.transport
        assert transport is not None
        if fault.delay:
            await asyncio.sleep(fault.delay)
            arrived = self.loop.time()
        if fault.drop:
            transport.abort()
            return
        if fault.hang:
            await asyncio.Future()  # cancelled when the server stops or the client leaves
        if fault.status is not None:
            payload = fault.body if fault.body is not None else _error_body(request, fault.status)
            data = payload.encode() if isinstance(payload, str) else payload
            response = _Response(fault.status, dict(fault.headers or {}), data)
        else:
            response = self.server._respond(request)
            wait = arrived + self.server.latency - self.loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
        if fault.drip:
            await self._drip(response, fault.drip)
        else:
            self._write(response)

    def _write(self, response: _Response) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if response.chunks is None:
            transport.write(_head(response) + response.body)
            return
        transport.write(_head(response))
        for chunk in response.chunks:
            transport.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        transport.write(b"0\r\n\r\n")

    async def _drip(self, response: _Response, drip: float) -> None:
        """The reply byte by byte (a stream event by event), ``drip`` seconds apart."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(_head(response))
        if response.chunks is None:
            for i in range(len(response.body)):
                await asyncio.sleep(drip)
                if transport.is_closing():
                    return
                transport.write(response.body[i : i + 1])
            return
        for chunk in response.chunks:
            await asyncio.sleep(drip)
            if transport.is_closing():
                return
            transport.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        transport.write(b"0\r\n\r\n")

    def _write_raw(self, status: int, body: bytes, keep_alive: bool = True) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n{'' if keep_alive else 'connection: close'}\r\n\r\n"
        )
        self.transport.write(head.replace("\r\n\r\n\r\n", "\r\n\r\n").encode() + body)
        if not keep_alive:
            self.transport.close()


_JSON_HEADS: dict[int, bytes] = {}


def _head(response: _Response) -> bytes:
    """The status line and headers of a reply (a plain JSON reply's from a template)."""
    if not response.headers and response.chunks is None:
        template = _JSON_HEADS.get(response.status)
        if template is None:
            reason = _REASONS.get(response.status, "Status")
            template = _JSON_HEADS[response.status] = (
                f"HTTP/1.1 {response.status} {reason}\r\n"
                "content-type: application/json\r\ncontent-length: "
            ).encode("latin-1")
        return b"%s%d\r\n\r\n" % (template, len(response.body))
    head = [f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Status')}"]
    headers = {
        "content-type": "application/json",
        **{k.lower(): v for k, v in response.headers.items()},
    }
    if response.chunks is not None:
        headers["content-type"] = "text/event-stream"
        headers["transfer-encoding"] = "chunked"
        headers["cache-control"] = "no-cache"
    else:
        headers["content-length"] = str(len(response.body))
    head += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")


if sys.platform == "linux":

    class _PreciseEpoll(selectors.EpollSelector):
        """epoll with timeouts to the microsecond.

        ``epoll_wait`` counts whole milliseconds and the selector rounds a wait up to the next
        one, so a reply due 20 ms after its request left 20 to 21 ms after it (0.5 ms late on
        average, 2.5% of the latency). This selector waits out a timeout with ``select(2)`` on
        the epoll descriptor itself (readable when any registered socket is), which counts
        microseconds, then collects the ready sockets without waiting.
        """

        exact = True

        def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
            if self.exact and timeout is not None and timeout > 0:
                try:
                    select.select([self.fileno()], [], [], timeout)
                except ValueError:  # a descriptor past FD_SETSIZE: whole milliseconds, then
                    self.exact = False
                else:
                    timeout = 0
            return super().select(timeout)


def _exact_timers() -> None:
    """On Linux, the calling thread's timers fire when due, not up to 50 µs later.

    The kernel lets a normal thread's timed waits end up to its "timer slack" (50 µs by
    default) past their timeout, to batch wake-ups; a reply due 20 ms after its request would
    leave that much later still. One nanosecond of slack (``PR_SET_TIMERSLACK``) is the least
    the kernel allows; it applies to this thread only (the server's). Best effort: where
    ``prctl`` is missing or refused, the default slack stays.
    """
    if sys.platform != "linux":
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(29, 1, 0, 0, 0)  # PR_SET_TIMERSLACK, 1 ns
    except (OSError, AttributeError):  # pragma: no cover - no libc prctl here
        pass


def _server_loop() -> asyncio.AbstractEventLoop:
    """The server thread's event loop (on Linux: timers to the microsecond, see above)."""
    if sys.platform == "linux":
        return asyncio.SelectorEventLoop(_PreciseEpoll())
    return asyncio.new_event_loop()


def _error_body(request: RecordedRequest, status: int) -> bytes:
    message = f"injected fault: HTTP {status}"
    if request.provider == "anthropic":
        kind = {401: "authentication_error", 429: "rate_limit_error", 529: "overloaded_error"}.get(
            status, "api_error" if status >= 500 else "invalid_request_error"
        )
        return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})
    kind = {401: "invalid_api_key", 429: "rate_limit_exceeded"}.get(status, "server_error")
    return orjson.dumps({"error": {"message": message, "type": kind, "code": status}})


def _bad_request(provider: str, message: str) -> _Response:
    if provider == "anthropic":
        body = {"type": "error", "error": {"type": "invalid_request_error", "message": message}}
    else:
        body = {"error": {"message": message, "type": "invalid_request_error", "code": 400}}
    return _Response(400, {}, orjson.dumps(body))


class LMServer:
    """A scripted OpenAI/Anthropic-compatible LM server for tests (see :mod:`dspex.testing`).

    ``url`` is the OpenAI-style base (``http://127.0.0.1:PORT/v1``): POST ``{url}/chat/completions``
    or, for Anthropic, ``{url}/messages``.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, latency: float = 0.0) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            from dspex.errors import ConfigurationError

            raise ConfigurationError(f"LMServer only binds to loopback addresses, not {host!r}")
        self.host = host
        self.port = port
        self.latency = latency
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._replies: list[ReplySpec] = []
        self._rules: list[_Rule] = []
        from dspex.testing.finetuning import FineTuningAPI

        self.finetuning = FineTuningAPI()  # the OpenAI fine-tuning routes (testing/finetuning.py)
        self._faults: list[Fault] = []
        self._connections: set[_Connection] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base_url}/v1"

    def start(self) -> LMServer:
        if self._thread is not None:
            return self
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            _exact_timers()
            loop = _server_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    loop.create_server(
                        lambda: _Connection(self), self.host, self.port, backlog=1024
                    )
                )
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:
                errors.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name="dspex-lmserver", daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            self._thread = None
            raise errors[0]
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for conn in list(self._connections):
                if conn.transport is not None:
                    conn.transport.abort()
                if conn.worker is not None:
                    conn.worker.cancel()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._server is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._server.wait_closed(), 0.5)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout=2)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=2)
        self._thread = None
        self._loop = None

    def __enter__(self) -> LMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> LMServer:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    # ------------------------------------------------------------------ scripting
    def reply(self, *replies: ReplySpec) -> None:
        """Queue replies, one per request (FIFO); a dict holds output field values."""
        with self._lock:
            self._replies.extend(replies)

    def add_rule(self, match: Match, reply: ReplySpec) -> None:
        """Answer requests whose last user message contains ``match`` (or ``match(req)``) with ``reply``."""
        with self._lock:
            self._rules.append(_Rule(match, reply))

    def fault(self, fault: Fault) -> None:
        """Queue a fault for the next matching request(s)."""
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()
            self._replies.clear()
            self._rules.clear()
            self._faults.clear()

    # ------------------------------------------------------------------ internals (server thread)
    def _record(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> RecordedRequest:
        parsed: Any = None
        if body:
            try:
                parsed = orjson.loads(body)
            except orjson.JSONDecodeError:
                parsed = None
        provider = "anthropic" if path.rstrip("/").endswith("/messages") else "openai"
        request = RecordedRequest(method, path, dict(headers), body, time.time(), parsed, provider)
        with self._lock:
            self.requests.append(request)
        return request

    def _take_fault(self, request: RecordedRequest) -> Fault | None:
        with self._lock:
            for i, fault in enumerate(self._faults):
                if _matches(fault.match, request):
                    if fault.times > 0:
                        fault.times -= 1
                        if fault.times == 0:
                            del self._faults[i]
                    return fault
        return None

    def _scripted(self, request: RecordedRequest) -> ReplySpec | None:
        with self._lock:
            for rule in self._rules:
                if _matches(rule.match, request):
                    return rule.reply
            if self._replies:
                return self._replies.pop(0)
        return None

    def _respond(self, request: RecordedRequest) -> _Response:
        path = request.path.rstrip("/")
        tuned = self.finetuning.respond(request.method, path, request.headers, request.body)
        if tuned is not None:
            return _Response(tuned[0], {}, tuned[1])
        if request.method == "GET" and path.endswith("/models"):
            return _Response(
                200,
                {},
                orjson.dumps({"object": "list", "data": [{"id": "test-model", "object": "model"}]}),
            )
        if request.method != "POST" or not (
            path.endswith("/chat/completions") or path.endswith("/messages")
        ):
            return _Response(
                404,
                {},
                orjson.dumps({"error": {"message": f"no route {request.method} {request.path}"}}),
            )
        body = request.json
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _bad_request(
                request.provider, "request body must be a JSON object with a 'messages' list"
            )
        n = body.get("n") or 1
        if not isinstance(n, int) or not 1 <= n <= 128:
            return _bad_request(request.provider, "'n' must be an integer between 1 and 128")
        system = body.get("system") if request.provider == "anthropic" else None
        if isinstance(system, list):
            system = "".join(b.get("text", "") for b in system if isinstance(b, dict))
        scripted = self._scripted(request)
        calls: list[ToolCallSpec] = []
        if isinstance(scripted, ToolCallReply):
            calls = [ToolCallSpec(name, dict(args)) for name, args in scripted.calls]
            texts: list[str | None] = [scripted.text] * n
        else:
            if scripted is None:
                calls = auto_tool_calls(body, request.provider, body["messages"])
            texts = [
                self._text_for(request, body["messages"], system, i, scripted if i == 0 else None)
                for i in range(n)
            ]
            if calls:  # a tool call replaces the text answer (the adapter removed its fields)
                texts = [_text_beside_calls(t, system, body["messages"]) for t in texts]
        model = str(body.get("model", "test-model"))
        prompt_tokens = max(1, len(request.body) // 4)
        stream = bool(body.get("stream"))
        if request.provider == "anthropic":
            return _anthropic(model, texts[0], prompt_tokens, stream, calls)
        return _openai(model, texts, prompt_tokens, stream, calls)

    def _text_for(
        self,
        request: RecordedRequest,
        messages: list[Any],
        system: str | None,
        choice: int,
        scripted: ReplySpec | None,
    ) -> str:
        if scripted is None or isinstance(scripted, ToolCallReply):
            return answer_messages(messages, system=system, choice=choice)
        if callable(scripted):
            return str(scripted(request))
        if isinstance(scripted, str):
            return scripted
        sys_text = system or next(
            (str(m.get("content")) for m in messages if m.get("role") == "system"), ""
        )
        spec = read_prompt(sys_text, request.last_user_message)
        if spec is None:
            return orjson.dumps(dict(scripted)).decode()
        return render_reply(spec, scripted)


def _text_beside_calls(text: str | None, system: str | None, messages: list[Any]) -> str | None:
    """The content sent with tool calls: the field answer if the prompt still asks for fields."""
    sys_text = system or next(
        (str(m.get("content")) for m in messages if m.get("role") == "system"), ""
    )
    last_user = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), "")
    spec = read_prompt(sys_text, last_user if isinstance(last_user, str) else "")
    return text if spec is not None and spec.fields else None


def _call_id(prefix: str, index: int, call: ToolCallSpec) -> str:
    digest = orjson.dumps([index, call.name, dict(call.args)], option=orjson.OPT_SORT_KEYS)
    return prefix + uuid.uuid5(uuid.NAMESPACE_OID, digest.decode()).hex[:24]


def _random_hex() -> str:
    """24 random hex digits for a reply id (no ``os.urandom`` syscall per reply, as ``uuid4``)."""
    return f"{random.getrandbits(96):024x}"


def _usage_openai(prompt: int, text: str) -> dict[str, int]:
    completion = max(1, len(text) // 4)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _openai_message(text: str | None, calls: list[ToolCallSpec]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        message["tool_calls"] = [
            {
                "id": _call_id("call_", i, c),
                "type": "function",
                "function": {"name": c.name, "arguments": orjson.dumps(dict(c.args)).decode()},
            }
            for i, c in enumerate(calls)
        ]
    return message


def _openai(
    model: str,
    texts: list[str | None],
    prompt_tokens: int,
    stream: bool,
    calls: list[ToolCallSpec] | None = None,
) -> _Response:
    rid = "chatcmpl-" + _random_hex()
    created = int(time.time())
    usage = _usage_openai(prompt_tokens, "".join(t or "" for t in texts))
    if not stream or calls:  # tool calls are always sent whole
        body = {
            "id": rid,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": i,
                    "message": _openai_message(t, calls or []),
                    "finish_reason": "tool_calls" if calls else "stop",
                }
                for i, t in enumerate(texts)
            ],
            "usage": usage,
        }
        return _Response(200, {}, orjson.dumps(body))
    chunks: list[bytes] = []

    def event(payload: Any) -> None:
        chunks.append(b"data: " + orjson.dumps(payload) + b"\n\n")

    for i, maybe_text in enumerate(texts):
        text = maybe_text or ""
        base = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model}
        event(
            {
                **base,
                "choices": [
                    {
                        "index": i,
                        "delta": {"role": "assistant", "content": ""},
                        "finish_reason": None,
                    }
                ],
            }
        )
        for piece in _pieces(text):
            event(
                {
                    **base,
                    "choices": [{"index": i, "delta": {"content": piece}, "finish_reason": None}],
                }
            )
        event({**base, "choices": [{"index": i, "delta": {}, "finish_reason": "stop"}]})
    event(
        {
            "id": rid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "usage": usage,
        }
    )
    chunks.append(b"data: [DONE]\n\n")
    return _Response(200, {}, b"", chunks)


def _anthropic(
    model: str,
    maybe_text: str | None,
    prompt_tokens: int,
    stream: bool,
    calls: list[ToolCallSpec] | None = None,
) -> _Response:
    mid = "msg_" + _random_hex()
    text = maybe_text or ""
    out_tokens = max(1, len(text) // 4)
    if not stream or calls:  # tool calls are always sent whole
        content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
        content.extend(
            {
                "type": "tool_use",
                "id": _call_id("toolu_", i, c),
                "name": c.name,
                "input": dict(c.args),
            }
            for i, c in enumerate(calls or [])
        )
        body = {
            "id": mid,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": "tool_use" if calls else "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": prompt_tokens, "output_tokens": out_tokens},
        }
        return _Response(200, {}, orjson.dumps(body))
    chunks: list[bytes] = []

    def event(name: str, payload: Any) -> None:
        chunks.append(f"event: {name}\n".encode() + b"data: " + orjson.dumps(payload) + b"\n\n")

    event("message_start", {"type": "message_start", "message": {
        "id": mid, "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": prompt_tokens, "output_tokens": 1}}})  # fmt: skip
    event(
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    )
    for piece in _pieces(text):
        event(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": piece},
            },
        )
    event("content_block_stop", {"type": "content_block_stop", "index": 0})
    event("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                            "usage": {"output_tokens": out_tokens}})  # fmt: skip
    event("message_stop", {"type": "message_stop"})
    return _Response(200, {}, b"", chunks)


def _pieces(text: str, size: int = 12) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]
