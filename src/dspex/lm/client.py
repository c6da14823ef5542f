"""``dspex.LM``: an async-first HTTP client for OpenAI-compatible and Anthropic chat models.

One logical call = cache lookup, then at most ``num_retries + 1`` HTTP requests within one
overall deadline (``timeout``), through the endpoint's circuit breaker. Every decision that
does no I/O is shared by the sync and async paths, which repeat only the I/O (as httpx's
``Client``/``AsyncClient``): options, cache key and cache hit (:meth:`LM._prepare`), the
retry/deadline/breaker rules (:meth:`LM._attempt_flow`, a generator both drivers run), and
usage/history/cache writes (:meth:`LM._finish`). Sync calls use blocking keep-alive sockets
(:class:`~dspex.lm.transport.SyncConnectionPool`, no event loop per call); each event loop
gets its own :class:`~dspex.lm.transport.ConnectionPool` (connections are bound to a loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Generator
from typing import Any

import orjson

from dspex import settings
from dspex._sync import on_loop_shutdown
from dspex.errors import (
    ConfigurationError,
    ContextWindowExceeded,
    LMAuthError,
    LMBadRequestError,
    LMError,
    LMRateLimitError,
    LMServerError,
    LMTimeoutError,
    LMTransportError,
    is_retryable,
)
from dspex.lm.base import BaseLM, Message
from dspex.lm.cache import request_blob, shared_cache
from dspex.lm.providers import Endpoint, build_body, error_message, parse_response, resolve
from dspex.lm.resilience import CircuitBreaker, RetryPolicy, breaker_for, parse_retry_after
from dspex.lm.transport import ConnectionPool, HTTPError, Response, SyncConnectionPool, Target
from dspex.lm.usage import current_tracker
from dspex.telemetry import events
from dspex.utils.callback import with_callbacks

__all__ = ["LM"]

_CONTEXT_MARKERS = (
    "context_length_exceeded",
    "maximum context length",
    "prompt is too long",
    "context window",
)


class _Call:
    """One prepared call: the request, its cache key, and the cached answer if there is one."""

    __slots__ = ("blob", "hit", "messages", "options")

    def __init__(
        self,
        messages: list[Message],
        options: dict[str, Any],
        blob: bytes | None,
        hit: list[str] | None,
    ) -> None:
        self.messages = messages
        self.options = options
        self.blob = blob
        self.hit = hit


class LM(BaseLM):
    """A chat model over HTTP: ``LM("openai/gpt-4o-mini")``, ``LM("anthropic/claude-...")``."""

    def __init__(
        self,
        model: str,
        api_base: str | None = None,
        api_key: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        cache: bool = True,
        num_retries: int = 3,
        timeout: float = 60.0,
        *,
        retry_policy: RetryPolicy | None = None,
        circuit_threshold: int = 5,
        circuit_cooldown: float = 30.0,
        history_size: int = 1000,
        **kwargs: Any,
    ) -> None:
        options = dict(kwargs)
        if temperature is not None:
            options["temperature"] = temperature
        if max_tokens is not None:
            options["max_tokens"] = max_tokens
        super().__init__(model, **options)
        self.endpoint: Endpoint = resolve(model, api_base, api_key)
        self.cache = cache
        if num_retries < 0 or timeout <= 0:
            raise ConfigurationError("num_retries must be >= 0 and timeout > 0")
        try:
            self._target = Target(self.endpoint.url, self.endpoint.headers())
        except ValueError as exc:
            raise ConfigurationError(f"api_base must be an http(s) URL: {exc}") from None
        self.num_retries = num_retries
        self.timeout = timeout
        self.retry_policy = retry_policy or RetryPolicy()
        self._circuit = (circuit_threshold, circuit_cooldown)
        self.history: deque[dict[str, Any]] = deque(maxlen=history_size)
        self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ConnectionPool] = (
            weakref.WeakKeyDictionary()
        )
        self._open_sync_pool()

    # ------------------------------------------------------------------ public
    @property
    def provider(self) -> str:
        return self.endpoint.provider

    @property
    def breaker(self) -> CircuitBreaker:
        return breaker_for(self.endpoint.url, *self._circuit)

    def copy(self, **overrides: Any) -> LM:
        params: dict[str, Any] = {
            "api_base": self.endpoint.api_base,
            "api_key": self.endpoint.api_key,
            "cache": self.cache,
            "num_retries": self.num_retries,
            "timeout": self.timeout,
            **self.kwargs,
        }
        params.update(overrides)
        model = params.pop("model", self.model)
        return LM(model, **params)

    def dump_state(self) -> dict[str, Any]:
        """DSPy-style LM state (never the API key)."""
        return {
            "model": self.model,
            "num_retries": self.num_retries,
            "cache": self.cache,
            **self.kwargs,
        }

    def __repr__(self) -> str:
        return f"LM({self.model!r}, api_base={self.endpoint.api_base!r})"

    async def aclose(self) -> None:
        """Close the connection pool of the current event loop."""
        pool = self._pools.pop(asyncio.get_running_loop(), None)
        if pool is not None:
            await pool.aclose()

    def close(self) -> None:
        """Close the idle connections of sync calls (they also close with the LM)."""
        self._sync_pool.close()
        self._open_sync_pool()

    def __getstate__(self) -> dict[str, Any]:
        """Copies and pickles carry the configuration, never the live connections."""
        state = self.__dict__.copy()
        del state["_pools"], state["_sync_pool"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pools = weakref.WeakKeyDictionary()
        self._open_sync_pool()

    def _open_sync_pool(self) -> None:
        self._sync_pool = SyncConnectionPool(*self._target.origin)
        weakref.finalize(self, self._sync_pool.close)  # no socket outlives its LM

    @with_callbacks
    def __call__(
        self, prompt: str | None = None, messages: list[Message] | None = None, **kwargs: Any
    ) -> list[str]:
        call = self._prepare(prompt, messages, kwargs)
        if call.hit is not None:
            return call.hit
        texts, usage = self._request_sync(call.messages, call.options)
        return self._finish(call, texts, usage)

    @with_callbacks
    async def acall(
        self, prompt: str | None = None, messages: list[Message] | None = None, **kwargs: Any
    ) -> list[str]:
        call = self._prepare(prompt, messages, kwargs)
        if call.hit is not None:
            return call.hit
        texts, usage = await self._request(call.messages, call.options)
        return self._finish(call, texts, usage)

    async def astream(self, messages: list[Message], **kwargs: Any) -> AsyncIterator[str]:
        """Text deltas as the model produces them (no cache; retried only before the first byte)."""
        options = {**self.kwargs, **kwargs, "stream": True}
        options.pop("rollout_id", None)
        options.pop("cache", None)
        body = build_body(self.endpoint, messages, options)
        if self.endpoint.wire == "openai":
            body["stream_options"] = {"include_usage": True}
        message = self._target.post(orjson.dumps(body))
        deadline = time.monotonic() + self.timeout
        pool = await self._pool()
        for attempt in range(self.num_retries + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._timeout_error()
            try:
                async with asyncio.timeout(remaining), pool.stream(message) as response:
                    if response.status >= 400:
                        raise self._status_error(
                            response.status, response.reason, response.headers,
                            await response.aread(),
                        )  # fmt: skip
                    async for delta in _sse_deltas(response.aiter_bytes(), self.endpoint.wire):
                        yield delta
                    return
            except TimeoutError:
                raise self._timeout_error() from None
            except HTTPError as exc:
                error: LMError = self._transport_error(exc)
                if attempt >= self.num_retries:
                    raise error from exc
            except LMError as exc:
                if not is_retryable(exc) or attempt >= self.num_retries:
                    raise
            await asyncio.sleep(
                min(self.retry_policy.backoff(attempt), max(0.0, deadline - time.monotonic()))
            )

    # ------------------------------------------------------------------ internals
    def _prepare(
        self, prompt: str | None, messages: list[Message] | None, kwargs: dict[str, Any]
    ) -> _Call:
        """Options and cache key; the cached answer (a fresh list) on a hit. No I/O but SQLite."""
        if messages is None:
            messages = [{"role": "user", "content": prompt or ""}]
        options = {**self.kwargs, **kwargs}
        rollout_id = options.pop("rollout_id", None)
        use_cache = options.pop("cache", True) and self.cache
        if not use_cache:
            return _Call(messages, options, None, None)
        blob = request_blob({
            "model": self.model, "api_base": self.endpoint.api_base, "messages": messages,
            "options": options, "rollout_id": rollout_id,
        })  # fmt: skip
        hit = shared_cache(settings.current().cache_dir).get(blob)
        observed = events.has_handlers()
        if hit is None:
            if observed:
                events.emit("dspex.cache.miss", None, {"model": self.model})
            return _Call(messages, options, blob, None)
        if observed:
            events.emit("dspex.cache.hit", None, {"model": self.model})
        self._remember(messages, options, list(hit[0]), {}, cached=True)
        return _Call(messages, options, blob, list(hit[0]))

    def _finish(self, call: _Call, texts: list[str], usage: dict[str, int]) -> list[str]:
        """Store, bill and remember a fresh answer; the caller gets its own list."""
        if call.blob is not None:
            shared_cache(settings.current().cache_dir).put(call.blob, texts, usage)
        tracker = current_tracker()
        if tracker is not None:
            tracker.add(self.model, usage)
        self._remember(call.messages, call.options, texts, usage, cached=False)
        return list(texts)

    async def _pool(self) -> ConnectionPool:
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        if pool is None:
            pool = ConnectionPool(*self._target.origin, max_connections=256)
            self._pools[loop] = pool  # one loop runs one task at a time: no race here
            await on_loop_shutdown(self.aclose)
        return pool

    def _remember(
        self,
        messages: list[Message],
        options: dict[str, Any],
        texts: list[str],
        usage: dict[str, int],
        *,
        cached: bool,
    ) -> None:
        from dspex.utils.inspect_history import record_history

        record_history(self, {
            "model": self.model, "messages": messages, "kwargs": options, "outputs": texts,
            "usage": {} if cached else usage, "cached": cached, "timestamp": time.time(),
        })  # fmt: skip

    def inspect_history(self, n: int = 1) -> list[dict[str, Any]]:
        return list(self.history)[-n:]

    def _request_sync(
        self, messages: list[Message], options: dict[str, Any]
    ) -> tuple[list[str], dict[str, int]]:
        """Run the attempt flow with blocking I/O (sync callers)."""
        message = self._target.post(orjson.dumps(build_body(self.endpoint, messages, options)))
        deadline = time.monotonic() + self.timeout
        pool = self._sync_pool
        meta = self._meta()
        with self._span(meta):
            flow = self._attempt_flow(deadline, meta)
            step = next(flow)
            while True:
                outcome: Response | LMError | None = None
                if step is None:
                    try:
                        outcome = pool.request(message, deadline)
                    except TimeoutError:
                        outcome = self._timeout_error()
                    except HTTPError as exc:
                        outcome = self._transport_error(exc)
                    except OSError as exc:
                        outcome = self._transport_error(HTTPError(f"{type(exc).__name__}: {exc}"))
                else:
                    time.sleep(step)
                try:
                    step = flow.send(outcome)
                except StopIteration as done:
                    return done.value  # type: ignore[no-any-return]

    async def _request(
        self, messages: list[Message], options: dict[str, Any]
    ) -> tuple[list[str], dict[str, int]]:
        """Run the attempt flow on the running event loop."""
        message = self._target.post(orjson.dumps(build_body(self.endpoint, messages, options)))
        deadline = time.monotonic() + self.timeout
        pool = await self._pool()
        meta = self._meta()
        with self._span(meta):
            flow = self._attempt_flow(deadline, meta)
            step = next(flow)
            while True:
                outcome: Response | LMError | None = None
                if step is None:
                    try:
                        async with asyncio.timeout(deadline - time.monotonic()):
                            outcome = await pool.request(message)
                    except TimeoutError:
                        outcome = self._timeout_error()
                    except HTTPError as exc:
                        outcome = self._transport_error(exc)
                else:
                    await asyncio.sleep(step)
                try:
                    step = flow.send(outcome)
                except StopIteration as done:
                    return done.value  # type: ignore[no-any-return]

    def _meta(self) -> dict[str, Any] | None:
        if not events.has_handlers():
            return None
        return {"model": self.model, "provider": self.provider}

    def _span(self, meta: dict[str, Any] | None) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext() if meta is None else events.span("dspex.lm.request", meta)

    def _attempt_flow(
        self, deadline: float, meta: dict[str, Any] | None
    ) -> Generator[float | None, Response | LMError | None, tuple[list[str], dict[str, int]]]:
        """The retry, deadline and circuit-breaker rules of one call, with no I/O.

        Yields ``None`` to ask the driver for one HTTP request (it sends back the
        :class:`Response`, or the ``LMError`` its failure maps to) or a number of seconds to
        pause. Returns the texts and usage, or raises the call's final error.
        """
        breaker = self.breaker
        for attempt in range(self.num_retries + 1):
            breaker.before_request(self.endpoint.url)
            if deadline - time.monotonic() <= 0:
                raise self._timeout_error()
            outcome = yield None
            if isinstance(outcome, Response):
                if outcome.status < 400:
                    try:
                        parsed = parse_response(self.endpoint, orjson.loads(outcome.body))
                    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
                        error: LMError = LMServerError(
                            f"{self.provider} returned a malformed response for {self.model}: {exc!r}",
                            provider=self.provider, model=self.model, status=None,
                        )  # fmt: skip
                    else:
                        breaker.record(True)
                        if meta is not None:
                            meta.update(status=outcome.status, attempts=attempt + 1, **parsed.usage)
                        return parsed.texts, parsed.usage
                else:
                    error = self._status_error(
                        outcome.status, outcome.reason, outcome.headers, outcome.body
                    )
            else:
                assert outcome is not None
                error = outcome
            if not is_retryable(error):
                raise error
            breaker.record(False)
            if isinstance(error, LMTimeoutError) and deadline - time.monotonic() <= 0:
                raise error
            if attempt >= self.num_retries:
                raise error
            wait = self.retry_policy.backoff(attempt)
            retry_after = getattr(error, "retry_after", None)
            if retry_after is not None:
                remaining = deadline - time.monotonic()
                if retry_after > self.retry_policy.max_retry_after or retry_after > remaining:
                    raise error
                wait = retry_after
            if wait >= deadline - time.monotonic():
                raise self._timeout_error()
            yield wait
        raise AssertionError("unreachable")  # pragma: no cover

    def _timeout_error(self) -> LMTimeoutError:
        return LMTimeoutError(
            f"{self.provider} call to {self.model} exceeded its {self.timeout:g}s deadline",
            provider=self.provider, model=self.model, status=None, timeout=self.timeout,
        )  # fmt: skip

    def _transport_error(self, exc: HTTPError) -> LMTransportError:
        return LMTransportError(
            f"cannot reach {self.provider} at {self.endpoint.api_base}: {type(exc).__name__}: {exc}",
            provider=self.provider, model=self.model, status=None,
        )  # fmt: skip

    def _status_error(
        self, status: int, reason: str, headers: dict[str, str], body: bytes
    ) -> LMError:
        try:
            data = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            data = None
        detail = error_message(data, body.decode("utf-8", "replace")[:300] if body else reason)
        message = f"{self.provider} returned HTTP {status} for {self.model}: {detail}"
        fields: dict[str, Any] = {"provider": self.provider, "model": self.model, "status": status}
        if status in (401, 403):
            return LMAuthError(message, **fields)
        if status == 429:
            retry_after = parse_retry_after(headers.get("retry-after"))
            if retry_after is not None and retry_after > self.retry_policy.max_retry_after:
                message += f" (server asks to retry after {retry_after:g}s)"
            return LMRateLimitError(message, retry_after=retry_after, **fields)
        if status in (408, 409) or status >= 500:
            return LMServerError(
                message,
                retry_after=parse_retry_after(headers.get("retry-after")),
                **fields,
            )
        if any(marker in detail.lower() for marker in _CONTEXT_MARKERS):
            return ContextWindowExceeded(message, **fields)
        return LMBadRequestError(message, **fields)


async def _sse_deltas(chunks: AsyncIterator[bytes], wire: str) -> AsyncIterator[str]:
    """Text deltas from a server-sent-events body (OpenAI or Anthropic event shapes)."""
    pending = b""
    async for chunk in chunks:
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            text = _sse_text(line, wire)
            if text is None:
                return
            if text:
                yield text
    text = _sse_text(pending, wire)
    if text:
        yield text


def _sse_text(raw: bytes, wire: str) -> str | None:
    """The text carried by one SSE line; ``""`` for none, ``None`` at ``[DONE]``."""
    line = raw.decode("utf-8", "replace").rstrip("\r")
    if not line.startswith("data:"):
        return ""
    payload = line[5:].strip()
    if payload == "[DONE]":
        return None
    try:
        event = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return ""
    if not isinstance(event, dict):
        return ""
    if wire == "openai":
        return "".join(
            str((choice.get("delta") or {}).get("content") or "")
            for choice in event.get("choices") or []
            if choice.get("index", 0) == 0
        )
    if event.get("type") == "content_block_delta":
        return str((event.get("delta") or {}).get("text") or "")
    return ""
