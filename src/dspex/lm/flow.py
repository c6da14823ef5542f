"""What one LM call decides, with no I/O: error mapping and the retry/deadline/breaker flow.

:class:`ErrorMap` is the one place a failure becomes an LM error — an HTTP status with its
body, a transport failure (:class:`~dspex.lm.transport.HTTPError`), the deadline — and the
one place secrets are scrubbed from what a server echoed. :func:`attempt_flow` is the one
retry loop: a generator that the sync call, the async call and the stream all drive
(:mod:`dspex.lm.client`), as httpx's auth flows are driven by its two clients.
:func:`drive` (blocking) and :func:`adrive` (the running loop) are the one driver of a flow
whose reply is read whole — the LM's calls and the Embedder's batches use them — and they
differ only in how they send a request and pause.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson

from dspex.errors import (
    ContextWindowExceeded,
    LMAuthError,
    LMBadRequestError,
    LMError,
    LMRateLimitError,
    LMResponseTooLarge,
    LMServerError,
    LMTimeoutError,
    LMTransportError,
    is_retryable,
)
from dspex.lm.providers import Endpoint, error_message, scrub
from dspex.lm.resilience import CircuitBreaker, RetryPolicy, parse_retry_after
from dspex.lm.transport import DeadlineExceeded, HTTPError, Response, ResponseTooLarge

__all__ = ["Attempts", "ErrorMap", "adrive", "attempt_flow", "drive"]

T = TypeVar("T")
R = TypeVar("R")

_CONTEXT_MARKERS = (
    "context_length_exceeded",
    "maximum context length",
    "prompt is too long",
    "context window",
)


class ErrorMap:
    """Turns what went wrong with one endpoint's calls into typed, secret-free LM errors."""

    __slots__ = ("base", "fields", "model", "provider", "secrets", "timeout")

    def __init__(self, endpoint: Endpoint, model: str, timeout: float) -> None:
        self.provider = endpoint.provider
        self.model = model
        self.timeout = timeout
        self.base = endpoint.display_base
        self.secrets = endpoint.secrets
        self.fields: dict[str, Any] = {"provider": self.provider, "model": model}

    def scrub(self, text: str) -> str:
        return scrub(text, self.secrets) if self.secrets else text

    def deadline(self) -> LMTimeoutError:
        return LMTimeoutError(
            f"{self.provider} call to {self.model} exceeded its {self.timeout:g}s deadline",
            status=None, timeout=self.timeout, **self.fields,
        )  # fmt: skip

    def failure(self, exc: HTTPError) -> LMError:
        """A transport failure (no complete HTTP reply)."""
        if isinstance(exc, DeadlineExceeded):
            return self.deadline()
        if isinstance(exc, ResponseTooLarge):
            return LMResponseTooLarge(
                f"{self.provider} reply for {self.model} refused: {exc} "
                "(raise it with LM(max_response_bytes=...))",
                status=None, limit=exc.limit, **self.fields,
            )  # fmt: skip
        return LMTransportError(
            self.scrub(f"cannot reach {self.provider} at {self.base}: {type(exc).__name__}: {exc}"),
            status=None, **self.fields,
        )  # fmt: skip

    def malformed(self, exc: Exception) -> LMServerError:
        return LMServerError(
            self.scrub(f"{self.provider} returned a malformed response for {self.model}: {exc!r}"),
            status=None, **self.fields,
        )  # fmt: skip

    def status(self, response: Response, max_retry_after: float) -> LMError:
        """The error an HTTP status >= 400 means (its body's message included, scrubbed)."""
        status, body = response.status, response.body
        try:
            data = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            data = None
        detail = error_message(data, body.decode("utf-8", "replace")[:300] if body else "")
        detail = self.scrub(detail or response.reason)
        message = f"{self.provider} returned HTTP {status} for {self.model}: {detail}"
        fields = {"status": status, **self.fields}
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        if status in (401, 403):
            return LMAuthError(message, **fields)
        if status == 429:
            if retry_after is not None and retry_after > max_retry_after:
                message += f" (server asks to retry after {retry_after:g}s)"
            return LMRateLimitError(message, retry_after=retry_after, **fields)
        if status in (408, 409) or status >= 500:
            return LMServerError(message, retry_after=retry_after, **fields)
        if any(marker in detail.lower() for marker in _CONTEXT_MARKERS):
            return ContextWindowExceeded(message, **fields)
        return LMBadRequestError(message, **fields)


@dataclass(frozen=True)
class Attempts:
    """The rules of one call: attempts, backoff, the breaker and where errors come from."""

    retries: int
    policy: RetryPolicy
    breaker: CircuitBreaker
    errors: ErrorMap


#: What a driver sends back after a request: the reply, or the transport failure.
Outcome = Response | HTTPError | None


def attempt_flow(
    rules: Attempts, deadline: float, accept: Callable[[Response], T]
) -> Generator[float | None, Outcome, tuple[T, Response, int]]:
    """The retry, deadline and circuit-breaker rules of one call, with no I/O.

    Yields ``None`` to ask the driver for one HTTP request (it sends back the
    :class:`Response`, or the :class:`HTTPError` the request failed with) or a number of
    seconds to pause. ``accept`` turns a 2xx/3xx reply into the call's value (raising an
    :class:`LMError` if it is malformed). Returns the value, the reply and the number of
    attempts; raises the call's final error. Every request the breaker admitted is settled
    exactly once, also when the driver closes the flow (a cancelled or interrupted call).
    """
    errors, breaker = rules.errors, rules.breaker
    for attempt in range(rules.retries + 1):
        if deadline - time.monotonic() <= 0:
            raise errors.deadline()
        probe = breaker.admit(errors.base)
        try:
            outcome = yield None
        except BaseException:  # the driver closed the flow mid-request: no verdict
            breaker.settle(probe, None)
            raise
        error: LMError
        if isinstance(outcome, Response):
            if outcome.status < 400:
                try:
                    value = accept(outcome)
                except LMError as exc:
                    error = exc
                else:
                    breaker.settle(probe, True)
                    return value, outcome, attempt + 1
            else:
                error = errors.status(outcome, rules.policy.max_retry_after)
        else:
            assert outcome is not None
            error = errors.failure(outcome)
        retryable = is_retryable(error)
        breaker.settle(probe, not retryable)  # a 400 is an answer: the endpoint is up
        if not retryable:
            raise error
        if isinstance(error, LMTimeoutError) and deadline - time.monotonic() <= 0:
            raise error
        if attempt >= rules.retries:
            raise error
        wait = rules.policy.backoff(attempt)
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            remaining = deadline - time.monotonic()
            if retry_after > rules.policy.max_retry_after or retry_after > remaining:
                raise error
            wait = retry_after
        if wait >= deadline - time.monotonic():
            raise errors.deadline()
        yield wait
    raise AssertionError("unreachable")  # pragma: no cover


Flow = Generator[float | None, Outcome, R]


class _Done(Generic[R]):
    """A finished flow's result (so a result of ``None`` is not read as "send a request")."""

    __slots__ = ("value",)

    def __init__(self, value: R) -> None:
        self.value = value


def _advance(flow: Flow[R], outcome: Outcome) -> float | _Done[R] | None:
    """Hand the flow what the last step got; its next step (``None``: a request, a number:
    seconds to pause) or, once it is done, its result."""
    try:
        return flow.send(outcome)
    except StopIteration as done:
        return _Done(done.value)


def drive(flow: Flow[R], send: Callable[[], Response]) -> R:
    """Run an attempt flow with blocking I/O: ``send()`` makes one HTTP request (raising
    :class:`HTTPError` when there is no reply). Returns the flow's result or raises its
    error; the flow is closed in every case (an interrupted request settles the breaker)."""
    try:  # not ``contextlib.closing``: this runs once per LM call
        step = _advance(flow, None)
        while not isinstance(step, _Done):
            outcome: Outcome = None
            if step is None:
                try:
                    outcome = send()
                except HTTPError as exc:
                    outcome = exc
            else:
                time.sleep(step)
            step = _advance(flow, outcome)
        return step.value
    finally:
        flow.close()


async def adrive(flow: Flow[R], send: Callable[[], Awaitable[Response]]) -> R:
    """:func:`drive` on the running loop: ``send()`` is awaited and pauses do not block."""
    try:
        step = _advance(flow, None)
        while not isinstance(step, _Done):
            outcome: Outcome = None
            if step is None:
                try:
                    outcome = await send()
                except HTTPError as exc:
                    outcome = exc
            else:
                await asyncio.sleep(step)
            step = _advance(flow, outcome)
        return step.value
    finally:
        flow.close()
