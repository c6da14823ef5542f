"""Retry timing and per-endpoint circuit breakers (pure logic, no I/O)."""

from __future__ import annotations

import email.utils
import random
import threading
import time
from dataclasses import dataclass, field

from dspex.errors import CircuitOpenError

__all__ = ["CircuitBreaker", "RetryPolicy", "breaker_for", "parse_retry_after"]


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


@dataclass(frozen=True)
class RetryPolicy:
    """Jittered exponential backoff: attempt k waits ``base * 2**k`` scaled by [0.5, 1.0)."""

    base: float = 0.25
    cap: float = 8.0
    max_retry_after: float = 30.0

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        raw = min(self.cap, self.base * float(2**attempt))
        return raw * (0.5 + 0.5 * (rng or random).random())


@dataclass
class CircuitBreaker:
    """Opens after ``threshold`` consecutive failures; after ``cooldown`` one probe may pass."""

    threshold: int = 5
    cooldown: float = 30.0
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        if time.monotonic() - self.opened_at >= self.cooldown:
            return "half_open"
        return "open"

    def before_request(self, endpoint: str) -> None:
        with self._lock:
            state = self.state
            if state == "closed":
                return
            if state == "half_open" and not self.probing:
                self.probing = True
                return
            assert self.opened_at is not None
            remaining = max(0.0, self.cooldown - (time.monotonic() - self.opened_at))
            raise CircuitOpenError(
                f"circuit open for {endpoint} after {self.failures} consecutive failures; "
                f"retry in {remaining:.1f}s",
                endpoint=endpoint,
                retry_after=remaining,
            )

    def record(self, ok: bool) -> None:
        with self._lock:
            self.probing = False
            if ok:
                self.failures = 0
                self.opened_at = None
                return
            self.failures += 1
            if self.failures >= self.threshold:
                self.opened_at = time.monotonic()


_breakers: dict[str, CircuitBreaker] = {}
_breakers_lock = threading.Lock()


def breaker_for(endpoint: str, threshold: int, cooldown: float) -> CircuitBreaker:
    with _breakers_lock:
        breaker = _breakers.get(endpoint)
        if breaker is None:
            breaker = _breakers[endpoint] = CircuitBreaker(threshold, cooldown)
        return breaker
