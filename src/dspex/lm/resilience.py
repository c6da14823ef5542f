"""Retry timing and per-endpoint circuit breakers (pure logic, no I/O)."""

from __future__ import annotations

import email.utils
import random
import threading
import time
from dataclasses import dataclass, field

from dspex.errors import CircuitOpenError, ConfigurationError

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
    """Opens after ``threshold`` consecutive failures; after ``cooldown`` one probe may pass.

    Each request the breaker admits ends with exactly one :meth:`settle`: ``ok=True`` (the
    endpoint answered: a success, or an answer retrying cannot change such as a 400),
    ``ok=False`` (a retryable failure), or ``ok=None`` (no verdict: the caller was cancelled
    or gave up before an answer). A probe therefore always ends in ``closed`` (it succeeded),
    ``open`` for a new cooldown (it failed), or ``open`` with the cooldown still elapsed so
    the next call probes again (it was abandoned) — never stuck half-open.
    """

    threshold: int = 5
    cooldown: float = 30.0
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if self.threshold < 1 or self.cooldown < 0:
            raise ConfigurationError("circuit_threshold must be >= 1 and circuit_cooldown >= 0")

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        if time.monotonic() - self.opened_at >= self.cooldown:
            return "half_open"
        return "open"

    def admit(self, endpoint: str) -> bool:
        """Let one request through (``True`` if it is the half-open probe), or raise
        :class:`CircuitOpenError`."""
        if self.opened_at is None:  # closed: nothing to change, so no lock (read is atomic)
            return False
        with self._lock:
            state = self.state
            if state == "closed":
                return False
            if state == "half_open" and not self.probing:
                self.probing = True
                return True
            assert self.opened_at is not None
            remaining = max(0.0, self.cooldown - (time.monotonic() - self.opened_at))
            raise CircuitOpenError(
                f"circuit open for {endpoint} after {self.failures} consecutive failures; "
                + (
                    "a probe is in flight" if state == "half_open" else f"retry in {remaining:.1f}s"
                ),
                endpoint=endpoint,
                retry_after=remaining,
            )

    def settle(self, probe: bool, ok: bool | None) -> None:
        """The end of one admitted request (see the class docstring)."""
        if not probe and (ok is None or (ok and not self.failures and self.opened_at is None)):
            # nothing would change: the same as taking the lock before a concurrent settle
            return
        with self._lock:
            if probe:
                self.probing = False
            if ok is None:
                return
            if ok:
                self.failures = 0
                self.opened_at = None
                return
            self.failures += 1
            if self.failures >= self.threshold:
                self.opened_at = time.monotonic()

    # the names of the first version, kept for callers outside the LM
    def before_request(self, endpoint: str) -> None:
        self.admit(endpoint)

    def record(self, ok: bool) -> None:
        self.settle(True, ok)


_breakers: dict[tuple[str, int, float], CircuitBreaker] = {}
_breakers_lock = threading.Lock()


def breaker_for(endpoint: str, threshold: int, cooldown: float) -> CircuitBreaker:
    """The breaker shared by every LM calling ``endpoint`` with these settings.

    Keyed by endpoint *and* settings: an LM built with ``circuit_threshold=100`` never gets
    the breaker of an earlier LM that asked for 5 at the same URL.
    """
    key = (endpoint, threshold, float(cooldown))
    breaker = _breakers.get(key)
    if breaker is not None:
        return breaker
    with _breakers_lock:
        breaker = _breakers.get(key)
        if breaker is None:
            breaker = _breakers[key] = CircuitBreaker(threshold, cooldown)
        return breaker
