"""``HTTPTransport``: the LM's I/O layer, injectable (``LM(..., transport=HTTPTransport(...))``).

It owns every connection an LM uses: one blocking keep-alive pool per origin for sync
callers (shared by all threads) and one asyncio pool per origin and event loop (asyncio
connections are bound to their loop; they close when the loop shuts down). It knows nothing
about providers, retries or breakers: it sends one request message before a deadline and
returns the :class:`~dspex.lm.transport.Response`, or raises an
:class:`~dspex.lm.transport.HTTPError`. Every failure below HTTP — a socket error, a parser
error, the deadline — goes through one mapping, :func:`http_failure`, on all three paths
(sync request, async request, async stream), so they cannot drift.

Several LMs may share one transport (their pools are keyed by origin); an LM that built its
own transport closes it with the LM.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TypeAlias

from dspex._sync import on_loop_shutdown
from dspex.errors import ConfigurationError
from dspex.lm.transport import (
    DEFAULT_MAX_BODY,
    ConnectionPool,
    DeadlineExceeded,
    HTTPError,
    RemoteProtocolError,
    Response,
    StreamResponse,
    SyncConnectionPool,
    Target,
)

__all__ = ["HTTPTransport", "http_failure"]

Origin: TypeAlias = tuple[str, str, int]


def http_failure(exc: Exception) -> HTTPError | None:
    """The transport error an exception raised while sending or reading means, if any.

    ``TimeoutError`` (a socket timeout at the deadline, or ``asyncio.timeout`` expiring) is
    :class:`DeadlineExceeded`; any other ``OSError`` (reset, broken pipe, TLS) is a
    :class:`RemoteProtocolError`; our own :class:`HTTPError` passes through. Anything else is
    not a transport failure (``None``): the caller re-raises it unchanged.
    """
    if isinstance(exc, HTTPError):
        return exc
    if isinstance(exc, TimeoutError):
        return DeadlineExceeded("deadline exceeded")
    if isinstance(exc, OSError):
        return RemoteProtocolError(f"{type(exc).__name__}: {exc}")
    return None


def _raise_mapped(exc: Exception) -> None:
    failure = http_failure(exc)
    if failure is None:
        raise exc
    if failure is exc:
        raise exc
    raise failure from exc


class HTTPTransport:
    """Keep-alive HTTP/1.1 connection pools for sync and async LM calls, with body caps.

    ``max_response_bytes`` caps every reply body, raw and once inflated (default 32 MiB);
    ``max_connections`` caps the requests in flight per origin and event loop.
    """

    def __init__(
        self,
        *,
        max_response_bytes: int = DEFAULT_MAX_BODY,
        max_connections: int = 256,
        keepalive_expiry: float = 15.0,
    ) -> None:
        if max_response_bytes <= 0 or max_connections <= 0 or keepalive_expiry < 0:
            raise ConfigurationError(
                "HTTPTransport needs max_response_bytes > 0, max_connections > 0 and "
                "keepalive_expiry >= 0"
            )
        self.max_response_bytes = max_response_bytes
        self.max_connections = max_connections
        self.keepalive_expiry = keepalive_expiry
        self._sync: dict[Origin, SyncConnectionPool] = {}
        weakref.finalize(self, _close_all, self._sync)  # no socket outlives its transport
        self._async: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[Origin, ConnectionPool]
        ] = weakref.WeakKeyDictionary()
        #: the loop whose pools were used last (weakly) and those pools
        self._last: (
            tuple[weakref.ref[asyncio.AbstractEventLoop], dict[Origin, ConnectionPool]] | None
        ) = None

    def __repr__(self) -> str:
        return f"HTTPTransport(max_response_bytes={self.max_response_bytes})"

    def settings(self) -> dict[str, float]:
        """The constructor arguments (a copy of an LM builds an equal transport from them)."""
        return {
            "max_response_bytes": self.max_response_bytes,
            "max_connections": self.max_connections,
            "keepalive_expiry": self.keepalive_expiry,
        }

    # ------------------------------------------------------------------ requests
    def request(self, target: Target, message: bytes, deadline: float) -> Response:
        """Send ``message`` with blocking sockets; the whole reply before ``deadline``."""
        pool = self._sync.get(target.origin)
        if pool is None:
            pool = self._sync.setdefault(target.origin, self._new_sync_pool(target.origin))
        try:
            return pool.request(message, deadline)
        except Exception as exc:
            _raise_mapped(exc)
            raise  # pragma: no cover - _raise_mapped always raises

    async def arequest(self, target: Target, message: bytes, deadline: float) -> Response:
        """Send ``message`` on the running loop; the whole reply before ``deadline``."""
        loop = asyncio.get_running_loop()
        last = self._last  # the last loop's pools: no weak-dict lookup on its calls
        if last is not None and last[0]() is loop:
            pools: dict[Origin, ConnectionPool] | None = last[1]
        else:
            pools = self._async.get(loop)
            if pools is not None:
                self._last = (weakref.ref(loop), pools)
        pool = pools.get(target.origin) if pools is not None else None
        if pool is None:
            pool = await self._pool(target.origin)
        try:
            return await pool.request(message, deadline)
        except Exception as exc:
            _raise_mapped(exc)
            raise  # pragma: no cover

    def astream(
        self, target: Target, message: bytes, deadline: float
    ) -> AbstractAsyncContextManager[StreamResponse]:
        """The reply once its head arrived, its body read as it comes, all before ``deadline``.

        The deadline covers the body too: a caller reading it inside the ``async with`` gets
        :class:`DeadlineExceeded` when it passes.
        """
        return self._stream(target, message, deadline)

    @asynccontextmanager
    async def _stream(
        self, target: Target, message: bytes, deadline: float
    ) -> AsyncIterator[StreamResponse]:
        pool = await self._pool(target.origin)
        try:
            async with (
                asyncio.timeout(deadline - time.monotonic()),
                pool.stream(message) as response,
            ):
                yield response  # body failures surface here, inside this try
        except Exception as exc:
            _raise_mapped(exc)

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Close the idle connections of sync calls (new calls open new ones)."""
        _close_all(self._sync)

    async def aclose(self) -> None:
        """Close the asyncio connections of the running event loop."""
        loop = asyncio.get_running_loop()
        if self._last is not None and self._last[0]() is loop:
            self._last = None
        pools = self._async.pop(loop, None) or {}
        for pool in pools.values():
            await pool.aclose()

    def _new_sync_pool(self, origin: Origin) -> SyncConnectionPool:
        return SyncConnectionPool(
            *origin, keepalive_expiry=self.keepalive_expiry, max_body=self.max_response_bytes
        )

    async def _pool(self, origin: Origin) -> ConnectionPool:
        loop = asyncio.get_running_loop()
        pools = self._async.get(loop)
        if pools is None:
            pools = self._async[loop] = {}  # one loop runs one task at a time: no race here
            await on_loop_shutdown(self.aclose)
        self._last = (weakref.ref(loop), pools)
        pool = pools.get(origin)
        if pool is None:
            pool = pools[origin] = ConnectionPool(
                *origin,
                max_connections=self.max_connections,
                keepalive_expiry=self.keepalive_expiry,
                max_body=self.max_response_bytes,
            )
        return pool


def _close_all(pools: dict[Origin, SyncConnectionPool]) -> None:
    while pools:
        pools.popitem()[1].close()
