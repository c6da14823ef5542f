"""A lean HTTP/1.1 client for LM calls: keep-alive connections on asyncio, parsed by httptools.

Why not httpx on this path: profiled at 64 concurrent ``Predict.acall``s against a local
server, httpx/httpcore spent ~88% of the client's CPU on pool bookkeeping (every request
scans every pooled connection, each scan a ``getpeername`` syscall through anyio), which
capped throughput below DSPy's. An LM call needs one thing from HTTP: POST a JSON body to
one origin and read the reply, whole or as a stream, over reused connections. This module
does only that:

- one :class:`ConnectionPool` per origin and event loop (connections are bound to their
  loop); idle connections are reused newest first; at most ``max_connections`` requests are
  in flight; a connection the server closed is noticed through ``connection_lost`` (no
  syscall per request) and never reused, nor is one idle for longer than ``keepalive_expiry``;
- a request that fails on a reused connection before any byte of its reply arrived (the
  server closed the idle connection as we sent) is resent once on a fresh connection;
- Content-Length, chunked and read-to-close bodies; gzip/deflate bodies are decoded;
- bounded: a reply whose body, or whose body once inflated, passes ``max_body`` bytes fails
  fast with :class:`ResponseTooLarge` (a Content-Length beyond it before any body byte is
  read; inflation stops at the cap, so a gzip bomb costs at most ``max_body`` bytes), and
  a response head past 256 KiB is a :class:`RemoteProtocolError`;
- https through the standard :mod:`ssl` module (certifi's CA bundle when installed, as httpx);
- no timeouts of its own: callers wrap calls in ``asyncio.timeout`` (the LM's deadline), and
  a request cancelled half-way closes its connection instead of returning it to the pool.

:class:`SyncConnectionPool` is the same over blocking sockets for sync callers (shared
across threads, one request per connection at a time), bounded by an explicit deadline: it
saves sync calls the event loop's per-call machinery (a sync ``LM`` call against the local
server went from 0.31 to 0.21 ms).

Failures raise :class:`HTTPError` subclasses; :class:`dspex.lm.wire.HTTPTransport` owns these
pools and :mod:`dspex.lm.flow` maps failures to LM errors.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

import httptools

if TYPE_CHECKING:
    import ssl

__all__ = [
    "DEFAULT_MAX_BODY",
    "ConnectError",
    "ConnectionPool",
    "DeadlineExceeded",
    "HTTPError",
    "RemoteProtocolError",
    "Response",
    "ResponseTooLarge",
    "StreamResponse",
    "SyncConnectionPool",
    "Target",
]

_USER_AGENT = "dspex-python"
#: Default cap on a reply body, before and after gzip/deflate inflation (32 MiB).
DEFAULT_MAX_BODY = 32 << 20
_MAX_HEAD = 256 << 10


class HTTPError(Exception):
    """No complete HTTP response: the connection failed or the reply was malformed."""


class ConnectError(HTTPError):
    """The TCP (or TLS) connection could not be established."""


class RemoteProtocolError(HTTPError):
    """The server closed the connection early or sent something that is not HTTP/1.1."""


class DeadlineExceeded(HTTPError):
    """The caller's deadline passed before the reply was complete."""


class ResponseTooLarge(HTTPError):
    """The reply body (raw or inflated) passed ``limit`` bytes; the connection was dropped."""

    def __init__(self, message: str, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


def _too_large(limit: int, what: str = "response body") -> ResponseTooLarge:
    return ResponseTooLarge(f"{what} exceeds the {limit:,}-byte limit", limit)


class Target:
    """Where to POST and the request head to send, built once per endpoint.

    The head holds the credentials headers, so it never appears in ``repr``.
    """

    __slots__ = ("_head", "host", "origin", "path", "port", "scheme")

    def __init__(self, url: str, headers: Mapping[str, str]) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http(s) URL, got {url!r}")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.origin = (self.scheme, self.host, self.port)
        netloc = parts.netloc.rpartition("@")[2]
        lines = [
            f"POST {self.path} HTTP/1.1",
            f"host: {netloc}",
            "accept: */*",
            f"user-agent: {_USER_AGENT}",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        self._head = ("\r\n".join(lines) + "\r\ncontent-length: ").encode("latin-1")

    def post(self, body: bytes) -> bytes:
        """The complete request message for ``body``."""
        return b"".join((self._head, str(len(body)).encode(), b"\r\n\r\n", body))

    def __repr__(self) -> str:
        return f"Target({self.scheme}://{self.host}:{self.port}{self.path})"


class Response:
    """A complete HTTP response (header names lower-cased)."""

    __slots__ = ("body", "headers", "reason", "status")

    def __init__(self, status: int, reason: str, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class _Connection(asyncio.Protocol):
    """One keep-alive connection; runs one request at a time."""

    def __init__(self, max_body: int = DEFAULT_MAX_BODY) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.max_body = max_body
        self.closed = False
        self.active = False
        self.idle_since = 0.0
        self.deadline = 0.0  # of the request in flight (``time.monotonic()``), if it has one
        self.loop: asyncio.AbstractEventLoop | None = None
        self._reset(False)

    def _reset(self, stream: bool) -> None:
        self.stream = stream
        self.status = 0
        self.reason = b""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.received = 0  # body bytes (and head bytes until the head is done)
        self.head_done = False
        self.done = False
        self.got_bytes = False
        self.to_close = False  # body delimited by the server closing the connection
        self.error: HTTPError | None = None
        self.waiter: asyncio.Future[None] | None = None

    # -------------------------------------------------------------- caller side
    def start(self, message: bytes, stream: bool) -> None:
        assert self.transport is not None
        self._reset(stream)
        self.active = True
        self.transport.write(message)

    async def wait(self) -> None:
        """Until something happens (the whole reply, or for streams any progress)."""
        await self.event()
        if self.error is not None:
            raise self.error

    def event(self) -> asyncio.Future[None]:
        """The future the next event (progress, the end, an error) resolves; awaited directly
        by the pool (no coroutine frame per wait), which then checks ``error``. A resolved
        or cancelled one left in ``waiter`` is never woken again (:meth:`_wake` checks)."""
        if self.error is not None:
            raise self.error
        waiter = self.waiter = (self.loop or asyncio.get_running_loop()).create_future()
        return waiter

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def expire(self) -> None:
        """The request's deadline passed: drop the connection, wake the caller with the error."""
        if self.done or self.error is not None:
            return  # the reply is complete (or failed already): the caller takes it
        self.error = DeadlineExceeded("deadline exceeded")
        self.abort()
        self._wake()

    def response(self) -> Response:
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        if "content-encoding" in self.headers:
            body = _decode(self.headers, body, self.max_body)
        return Response(self.status, self.reason.decode("latin-1"), self.headers, body)

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -------------------------------------------------------------- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport
        self.transport = cast(asyncio.Transport, transport)
        self.loop = asyncio.get_running_loop()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.active and not self.done and self.error is None:
            if self.head_done and self.to_close:
                self.done = True
            elif self.got_bytes:
                self.error = RemoteProtocolError(
                    "server closed the connection before the response was complete"
                )
            else:
                self.error = RemoteProtocolError("server closed the connection without a response")
        self._wake()

    def data_received(self, data: bytes) -> None:
        if not self.active:  # nothing asked for: the connection is not in a usable state
            self.abort()
            return
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:  # includes errors raised by our callbacks
            if not self.done and self.error is None:
                self.error = RemoteProtocolError(f"malformed HTTP response: {exc}")
            self.abort()
            self._wake()

    # -------------------------------------------------------------- httptools callbacks
    def on_status(self, status: bytes) -> None:
        self.reason += status

    def _fail(self, error: HTTPError) -> None:
        """Stop parsing: the error reaches the caller through ``data_received``."""
        self.error = error
        raise error

    def on_header(self, name: bytes, value: bytes) -> None:
        self.received += len(name) + len(value)
        if self.received > _MAX_HEAD:
            self._fail(RemoteProtocolError(f"response head exceeds {_MAX_HEAD:,} bytes"))
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers = self.headers
        headers[key] = f"{headers[key]}, {text}" if key in headers else text

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # an interim 1xx reply: the real one follows
            self.reason, self.headers = b"", {}
            return
        self.status = status
        self.head_done = True
        self.received = 0
        headers = self.headers
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body:
            self._fail(_too_large(self.max_body))
        self.to_close = (
            "content-length" not in headers
            and "chunked" not in headers.get("transfer-encoding", "").lower()
            and status not in (204, 304)
        )
        if self.stream:
            self._wake()

    def on_body(self, body: bytes) -> None:
        self.received += len(body)
        if self.received > self.max_body:
            self.body = []
            self._fail(_too_large(self.max_body))
        self.body.append(body)
        if self.stream:
            self._wake()

    def on_message_complete(self) -> None:
        if not self.head_done:
            return
        self.done = True
        if not self.parser.should_keep_alive():
            self.closed = True
        self._wake()


def _decode(headers: dict[str, str], body: bytes, limit: int) -> bytes:
    encoding = headers.get("content-encoding")
    if not encoding or encoding == "identity" or not body:
        return body
    if encoding in ("gzip", "deflate", "x-gzip"):
        try:
            return _Inflater(limit).feed(body)
        except zlib.error:
            try:
                return _Inflater(limit, raw=True).feed(body)
            except zlib.error as exc:
                raise RemoteProtocolError(f"corrupt {encoding} body: {exc}") from None
    raise RemoteProtocolError(f"unsupported content-encoding {encoding!r}")


class _Inflater:
    """gzip/zlib (or raw deflate) decoding that stops as soon as the output passes ``limit``."""

    __slots__ = ("_inflate", "left", "limit")

    def __init__(self, limit: int, *, raw: bool = False) -> None:
        self._inflate = zlib.decompressobj(-15 if raw else 47)  # 47: zlib or gzip, detected
        self.limit = limit
        self.left = limit

    def feed(self, data: bytes) -> bytes:
        # max_length bounds the output (and the memory): a bomb stops one byte past the cap
        out = self._inflate.decompress(data, self.left + 1)
        self.left -= len(out)
        if self.left < 0:
            raise _too_large(self.limit, "inflated response body")
        return out


class StreamResponse:
    """A response whose body is read as it arrives (see :meth:`ConnectionPool.stream`)."""

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn
        self.status = conn.status
        self.reason = conn.reason.decode("latin-1")
        self.headers = conn.headers
        encoding = conn.headers.get("content-encoding")
        self._inflate = (
            _Inflater(conn.max_body) if encoding in ("gzip", "deflate", "x-gzip") else None
        )

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        conn = self._conn
        while True:
            if conn.body:
                data = b"".join(conn.body)
                conn.body = []
                yield self._inflate.feed(data) if self._inflate else data
            elif conn.done:
                return
            else:
                await conn.wait()

    async def aread(self) -> bytes:
        return b"".join([chunk async for chunk in self.aiter_bytes()])


class ConnectionPool:
    """Keep-alive HTTP/1.1 connections to one origin, for one event loop.

    Per request on the common path (an idle connection, a free slot): no lock, no timer and
    no task. The slots are a counter (a waiter queue only once ``max_connections`` requests
    are in flight), and deadlines are kept by one watchdog timer per pool, due at the earliest
    deadline in flight: a request whose deadline is later than the watchdog's (the usual
    case: same timeout, later start) schedules nothing.
    """

    def __init__(
        self,
        scheme: str,
        host: str,
        port: int,
        *,
        max_connections: int = 256,
        keepalive_expiry: float = 15.0,
        max_body: int = DEFAULT_MAX_BODY,
    ) -> None:
        self.scheme, self.host, self.port = scheme, host, port
        self.keepalive_expiry = keepalive_expiry
        self.max_body = max_body
        self.max_connections = max_connections
        self._idle: list[_Connection] = []
        self._in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._watched: set[_Connection] = set()  # requests with a deadline, in flight
        self._watchdog: asyncio.TimerHandle | None = None
        self._watchdog_at = 0.0
        self._closed = False
        self._ssl: ssl.SSLContext | None = None

    async def request(self, message: bytes, deadline: float | None = None) -> Response:
        """Send a complete request message; return the complete response.

        ``deadline`` (``time.monotonic()``) bounds the whole exchange: past it the connection
        is dropped and :class:`DeadlineExceeded` raised.
        """
        conn = await self._exchange(message, stream=False, deadline=deadline)
        try:
            return conn.response()
        finally:
            self._release(conn)

    @asynccontextmanager
    async def stream(self, message: bytes) -> AsyncIterator[StreamResponse]:
        """Send a request; yield the response once its head arrived, body still streaming."""
        conn = await self._exchange(message, stream=True)
        try:
            yield StreamResponse(conn)
        except BaseException:
            conn.abort()
            raise
        finally:
            if not conn.done:
                conn.abort()
            self._release(conn)

    async def aclose(self) -> None:
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.abort()

    # -------------------------------------------------------------- internals
    async def _exchange(
        self, message: bytes, *, stream: bool, deadline: float | None = None
    ) -> _Connection:
        if self._closed:
            raise HTTPError("connection pool is closed")
        if deadline is not None and deadline <= time.monotonic():
            raise DeadlineExceeded("deadline exceeded")
        if self._in_flight < self.max_connections and not self._waiters:
            self._in_flight += 1
        else:
            await self._wait_for_slot(deadline)
        try:
            for attempt in (0, 1):
                conn = self._take_idle()
                reused = conn is not None
                if conn is None:
                    conn = await self._connect(deadline)
                try:
                    if deadline is not None:
                        self._watch(conn, deadline)
                    conn.start(message, stream)
                    while not (conn.head_done if stream else conn.done):
                        await conn.event()
                        if conn.error is not None:
                            raise conn.error
                    return conn
                except RemoteProtocolError:
                    self._unwatch(conn)
                    conn.abort()
                    if reused and not conn.got_bytes and attempt == 0:
                        continue  # a stale keep-alive connection: resend on a fresh one
                    raise
                except BaseException:
                    self._unwatch(conn)
                    conn.abort()
                    raise
            raise AssertionError("unreachable")  # pragma: no cover
        except BaseException:
            self._free_slot()
            raise

    async def _wait_for_slot(self, deadline: float | None) -> None:
        """Queue for a slot (``max_connections`` requests are in flight), first come first served."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(None if deadline is None else deadline - time.monotonic()):
                await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._free_slot()  # handed a slot as we gave up: pass it on
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    def _free_slot(self) -> None:
        """A request left its slot: hand it to the first live waiter, or count it free."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes on: ``_in_flight`` is unchanged
                return
        self._in_flight -= 1

    def _watch(self, conn: _Connection, deadline: float) -> None:
        conn.deadline = deadline
        self._watched.add(conn)
        if self._watchdog is None or deadline < self._watchdog_at:
            self._arm(deadline)

    def _unwatch(self, conn: _Connection) -> None:
        self._watched.discard(conn)

    def _arm(self, deadline: float) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        loop = asyncio.get_running_loop()
        self._watchdog_at = deadline
        self._watchdog = loop.call_at(loop.time() + deadline - time.monotonic(), self._expire)

    def _expire(self) -> None:
        """The watchdog: fail the requests past their deadline, then wait for the next one."""
        self._watchdog = None
        now = time.monotonic()
        for conn in [c for c in self._watched if c.deadline <= now]:
            self._watched.discard(conn)
            conn.expire()
        if self._watched:
            self._arm(min(c.deadline for c in self._watched))

    def _take_idle(self) -> _Connection | None:
        idle = self._idle
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < self.keepalive_expiry:
                return conn
            conn.abort()
        return None

    def _release(self, conn: _Connection) -> None:
        conn.active = False
        self._watched.discard(conn)
        if conn.done and not conn.closed and not self._closed:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.abort()
        self._free_slot()

    async def _connect(self, deadline: float | None = None) -> _Connection:
        loop = asyncio.get_running_loop()
        kwargs: dict[str, Any] = {}
        if self.scheme == "https":
            kwargs = {"ssl": _ssl_context(self), "server_hostname": self.host}
        connecting = loop.create_connection(
            lambda: _Connection(self.max_body), self.host, self.port, **kwargs
        )
        # the deadline's TimeoutError (an OSError too) is raised outside the ``try``
        async with asyncio.timeout(None if deadline is None else deadline - time.monotonic()):
            try:
                _, conn = await connecting
            except OSError as exc:  # refused, unreachable, DNS (gaierror), TLS (SSLError)
                raise ConnectError(f"{type(exc).__name__}: {exc}") from exc
        return conn


class _SocketTransport:
    """What :class:`_Connection` needs of a transport, over a blocking socket."""

    __slots__ = ("sock",)

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)

    def abort(self) -> None:
        self.sock.close()


class SyncConnectionPool:
    """Blocking keep-alive connections to one origin, for sync callers (any thread).

    Same parsing and reuse rules as :class:`ConnectionPool`, without an event loop: sync
    calls skip the loop's per-call machinery. ``deadline`` (``time.monotonic()``) bounds the
    connect and every read, so hung servers, slow drips and blackholed connects raise
    :class:`TimeoutError` in time.
    """

    def __init__(
        self,
        scheme: str,
        host: str,
        port: int,
        *,
        keepalive_expiry: float = 15.0,
        max_body: int = DEFAULT_MAX_BODY,
    ) -> None:
        self.scheme, self.host, self.port = scheme, host, port
        self.keepalive_expiry = keepalive_expiry
        self.max_body = max_body
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        self._ssl: ssl.SSLContext | None = None

    def request(self, message: bytes, deadline: float) -> Response:
        for attempt in (0, 1):
            conn = self._take_idle()
            reused = conn is not None
            if conn is None:
                conn = self._connect(deadline)
            try:
                conn.start(message, False)
                sock = cast(_SocketTransport, conn.transport).sock
                while not conn.done:
                    if conn.error is not None:
                        raise conn.error
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError("deadline exceeded")
                    sock.settimeout(remaining)
                    try:
                        data = sock.recv(262144)
                    except (ConnectionResetError, BrokenPipeError):
                        data = b""
                    if data:
                        conn.data_received(data)
                    else:
                        conn.connection_lost(None)
                        if conn.error is not None:
                            raise conn.error
                response = conn.response()
            except RemoteProtocolError:
                conn.abort()
                if reused and not conn.got_bytes and attempt == 0:
                    continue  # a stale keep-alive connection: resend on a fresh one
                raise
            except (ConnectionResetError, BrokenPipeError) as exc:  # while sending
                conn.abort()
                if reused and attempt == 0:
                    continue
                raise RemoteProtocolError(f"{type(exc).__name__}: {exc}") from exc
            except BaseException:
                conn.abort()
                raise
            self._release(conn)
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.abort()

    def _take_idle(self) -> _Connection | None:
        now = time.monotonic()
        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                if not conn.closed and now - conn.idle_since < self.keepalive_expiry:
                    return conn
                conn.abort()
        return None

    def _release(self, conn: _Connection) -> None:
        conn.active = False
        with self._lock:
            if conn.done and not conn.closed and not self._closed:
                conn.idle_since = time.monotonic()
                self._idle.append(conn)
                return
        conn.abort()

    def _connect(self, deadline: float) -> _Connection:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("deadline exceeded")
        try:
            sock = socket.create_connection((self.host, self.port), timeout=remaining)
        except TimeoutError:
            raise
        except OSError as exc:  # refused, unreachable, DNS (gaierror)
            raise ConnectError(f"{type(exc).__name__}: {exc}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.scheme == "https":
            try:
                sock = _ssl_context(self).wrap_socket(sock, server_hostname=self.host)
            except TimeoutError:
                sock.close()
                raise
            except OSError as exc:
                sock.close()
                raise ConnectError(f"{type(exc).__name__}: {exc}") from exc
        conn = _Connection(self.max_body)
        conn.transport = cast(asyncio.Transport, _SocketTransport(sock))
        return conn


def _ssl_context(pool: ConnectionPool | SyncConnectionPool) -> ssl.SSLContext:
    if pool._ssl is None:
        import ssl

        try:
            import certifi

            pool._ssl = ssl.create_default_context(cafile=certifi.where())
        except ImportError:  # pragma: no cover - certifi comes with httpx
            pool._ssl = ssl.create_default_context()
    return pool._ssl
