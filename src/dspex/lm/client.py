"""``dspex.LM``: an async-first HTTP client for OpenAI-compatible and Anthropic chat models.

One logical call = cache lookup, then at most ``num_retries + 1`` HTTP requests within one
overall deadline (``timeout``), through the endpoint's circuit breaker. Sync callers go
through :func:`dspex._sync.run_sync` (one reused loop per thread); each event loop gets its
own pooled ``httpx.AsyncClient`` (keep-alive connections are bound to a loop).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

from dspex import settings
from dspex._sync import on_loop_shutdown
from dspex.errors import (
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
from dspex.lm.cache import cache_key, shared_cache
from dspex.lm.providers import Endpoint, build_body, error_message, parse_response, resolve
from dspex.lm.resilience import RetryPolicy, breaker_for, parse_retry_after
from dspex.lm.usage import current_tracker
from dspex.telemetry import events

__all__ = ["LM"]

_CONTEXT_MARKERS = (
    "context_length_exceeded",
    "maximum context length",
    "prompt is too long",
    "context window",
)


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
            from dspex.errors import ConfigurationError

            raise ConfigurationError("num_retries must be >= 0 and timeout > 0")
        self.num_retries = num_retries
        self.timeout = timeout
        self.retry_policy = retry_policy or RetryPolicy()
        self._circuit = (circuit_threshold, circuit_cooldown)
        self.history: deque[dict[str, Any]] = deque(maxlen=history_size)
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary()
        )

    # ------------------------------------------------------------------ public
    @property
    def provider(self) -> str:
        return self.endpoint.provider

    @property
    def breaker(self) -> Any:
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
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    async def acall(
        self, prompt: str | None = None, messages: list[Message] | None = None, **kwargs: Any
    ) -> list[str]:
        if messages is None:
            messages = [{"role": "user", "content": prompt or ""}]
        options = {**self.kwargs, **kwargs}
        rollout_id = options.pop("rollout_id", None)
        use_cache = self.cache and options.pop("cache", True)
        key = None
        if use_cache:
            key = cache_key({
                "model": self.model, "api_base": self.endpoint.api_base, "messages": messages,
                "options": options, "rollout_id": rollout_id,
            })  # fmt: skip
            hit = shared_cache(settings.current().cache_dir).get(key)
            if hit is not None:
                events.emit("dspex.cache.hit", None, {"model": self.model})
                self._remember(messages, options, hit["texts"], hit["usage"], cached=True)
                texts: list[str] = hit["texts"]
                return texts
            events.emit("dspex.cache.miss", None, {"model": self.model})
        parsed_texts, usage = await self._request(messages, options)
        if key is not None:
            shared_cache(settings.current().cache_dir).put(
                key, {"texts": parsed_texts, "usage": usage}
            )
        tracker = current_tracker()
        if tracker is not None and settings.current().track_usage:
            tracker.add(self.model, usage)
        self._remember(messages, options, parsed_texts, usage, cached=False)
        return list(parsed_texts)

    async def astream(self, messages: list[Message], **kwargs: Any) -> AsyncIterator[str]:
        """Text deltas as the model produces them (no cache; retried only before the first byte)."""
        options = {**self.kwargs, **kwargs, "stream": True}
        options.pop("rollout_id", None)
        body = build_body(self.endpoint, messages, options)
        if self.endpoint.wire == "openai":
            body["stream_options"] = {"include_usage": True}
        deadline = time.monotonic() + self.timeout
        client = await self._client()
        for attempt in range(self.num_retries + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._timeout_error()
            try:
                async with asyncio.timeout(remaining):
                    request = client.build_request("POST", self.endpoint.url, content=orjson.dumps(body),
                                                   headers=self.endpoint.headers(),
                                                   timeout=httpx.Timeout(remaining))  # fmt: skip
                    response = await client.send(request, stream=True)
                    try:
                        if response.status_code >= 400:
                            await response.aread()
                            raise self._status_error(response)
                        async for delta in _sse_deltas(response, self.endpoint.wire):
                            yield delta
                        return
                    finally:
                        await response.aclose()
            except TimeoutError:
                raise self._timeout_error() from None
            except httpx.TransportError as exc:
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
    async def _client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = httpx.AsyncClient(
                timeout=None,
                limits=httpx.Limits(max_connections=256, max_keepalive_connections=128),
                trust_env=False,
            )
            self._clients[loop] = client  # one loop runs one task at a time: no race here
            await on_loop_shutdown(self.aclose)
        return client

    def _remember(
        self,
        messages: list[Message],
        options: dict[str, Any],
        texts: list[str],
        usage: dict[str, int],
        *,
        cached: bool,
    ) -> None:
        self.history.append({
            "model": self.model, "messages": messages, "kwargs": options, "outputs": texts,
            "usage": {} if cached else usage, "cached": cached, "timestamp": time.time(),
        })  # fmt: skip

    def inspect_history(self, n: int = 1) -> list[dict[str, Any]]:
        return list(self.history)[-n:]

    async def _request(
        self, messages: list[Message], options: dict[str, Any]
    ) -> tuple[list[str], dict[str, int]]:
        body = orjson.dumps(build_body(self.endpoint, messages, options))
        deadline = time.monotonic() + self.timeout
        breaker = self.breaker
        client = await self._client()
        meta: dict[str, Any] | None = (
            {"model": self.model, "provider": self.provider} if events.has_handlers() else None
        )
        with events.span("dspex.lm.request", meta):
            for attempt in range(self.num_retries + 1):
                breaker.before_request(self.endpoint.url)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._timeout_error()
                try:
                    async with asyncio.timeout(remaining):
                        response = await client.post(
                            self.endpoint.url, content=body, headers=self.endpoint.headers(),
                            timeout=httpx.Timeout(remaining),
                        )  # fmt: skip
                    if response.status_code < 400:
                        data = orjson.loads(response.content)
                        parsed = parse_response(self.endpoint, data)
                        breaker.record(True)
                        if meta is not None:
                            meta.update(
                                status=response.status_code, attempts=attempt + 1, **parsed.usage
                            )
                        return parsed.texts, parsed.usage
                    error: LMError = self._status_error(response)
                except TimeoutError:
                    error = self._timeout_error()
                except httpx.TimeoutException:
                    error = self._timeout_error()
                except httpx.TransportError as exc:
                    error = self._transport_error(exc)
                except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
                    error = LMServerError(
                        f"{self.provider} returned a malformed response for {self.model}: {exc!r}",
                        provider=self.provider, model=self.model, status=None,
                    )  # fmt: skip
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
                await asyncio.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def _timeout_error(self) -> LMTimeoutError:
        return LMTimeoutError(
            f"{self.provider} call to {self.model} exceeded its {self.timeout:g}s deadline",
            provider=self.provider, model=self.model, status=None, timeout=self.timeout,
        )  # fmt: skip

    def _transport_error(self, exc: httpx.TransportError) -> LMTransportError:
        return LMTransportError(
            f"cannot reach {self.provider} at {self.endpoint.api_base}: {type(exc).__name__}: {exc}",
            provider=self.provider, model=self.model, status=None,
        )  # fmt: skip

    def _status_error(self, response: httpx.Response) -> LMError:
        status = response.status_code
        try:
            data = orjson.loads(response.content) if response.content else None
        except orjson.JSONDecodeError:
            data = None
        detail = error_message(
            data, response.text[:300] if response.content else response.reason_phrase
        )
        message = f"{self.provider} returned HTTP {status} for {self.model}: {detail}"
        fields: dict[str, Any] = {"provider": self.provider, "model": self.model, "status": status}
        if status in (401, 403):
            return LMAuthError(message, **fields)
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            if retry_after is not None and retry_after > self.retry_policy.max_retry_after:
                message += f" (server asks to retry after {retry_after:g}s)"
            return LMRateLimitError(message, retry_after=retry_after, **fields)
        if status in (408, 409) or status >= 500:
            return LMServerError(
                message,
                retry_after=parse_retry_after(response.headers.get("retry-after")),
                **fields,
            )
        if any(marker in detail.lower() for marker in _CONTEXT_MARKERS):
            return ContextWindowExceeded(message, **fields)
        return LMBadRequestError(message, **fields)


async def _sse_deltas(response: httpx.Response, wire: str) -> AsyncIterator[str]:
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue
        payload = line[5:].strip()
        if payload == "[DONE]":
            return
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            continue
        if wire == "openai":
            for choice in event.get("choices") or []:
                if choice.get("index", 0) == 0:
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        yield text
        elif event.get("type") == "content_block_delta":
            text = (event.get("delta") or {}).get("text")
            if text:
                yield text
