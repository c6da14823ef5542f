"""Observed latency and errors per (module kind, implementation), for adaptive routing.

With ``routing_strategy="performance"`` routed modules record each call here (an
exponentially weighted mean of seconds and of failures), and ``auto`` kinds with both
implementations are built on the one that has been faster without failing more. Until both
have ``MIN_SAMPLES`` observations, the less observed one is picked, so both get measured.
Only infrastructure failures count as errors: a user or LM error says nothing about the
implementation.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from dspex.errors import LMError, PoolError, RemoteError, UserError

__all__ = ["MIN_SAMPLES", "STATS", "KindStats", "measured_async", "measured_sync"]

MIN_SAMPLES = 5
ALPHA = 0.2
MAX_ERROR_RATE = 0.2


@dataclass
class KindStats:
    calls: int = 0
    latency: float = 0.0
    error_rate: float = 0.0

    def add(self, seconds: float, failed: bool) -> None:
        self.calls += 1
        weight = 1.0 if self.calls == 1 else ALPHA
        self.latency += weight * (seconds - self.latency)
        self.error_rate += weight * ((1.0 if failed else 0.0) - self.error_rate)


class Stats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by: dict[tuple[str, str], KindStats] = {}

    def record(self, kind: str, implementation: str, seconds: float, failed: bool) -> None:
        with self._lock:
            self._by.setdefault((kind, implementation), KindStats()).add(seconds, failed)

    def get(self, kind: str, implementation: str) -> KindStats:
        with self._lock:
            found = self._by.get((kind, implementation))
            return KindStats() if found is None else KindStats(**vars(found))

    def pick(self, kind: str) -> Literal["native", "dspy"] | None:
        native, dspy = self.get(kind, "native"), self.get(kind, "dspy")
        if native.calls < MIN_SAMPLES or dspy.calls < MIN_SAMPLES:
            return "native" if native.calls <= dspy.calls else "dspy"
        healthy = [
            (s.latency, name)
            for name, s in (("native", native), ("dspy", dspy))
            if s.error_rate <= MAX_ERROR_RATE
        ]
        if not healthy:
            return None
        return min(healthy)[1]  # type: ignore[return-value]

    def reset(self) -> None:
        with self._lock:
            self._by.clear()

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {f"{k}/{i}": vars(s).copy() for (k, i), s in self._by.items()}


STATS = Stats()


def _failed(exc: BaseException) -> bool:
    return isinstance(exc, PoolError | RemoteError) and not isinstance(exc, UserError | LMError)


def measured_sync(
    key: tuple[str, str], fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    start = time.perf_counter()
    try:
        result = fn(*args, **kwargs)
    except BaseException as exc:
        STATS.record(*key, time.perf_counter() - start, _failed(exc))
        raise
    STATS.record(*key, time.perf_counter() - start, False)
    return result


async def measured_async(key: tuple[str, str], awaitable: Awaitable[Any]) -> Any:
    start = time.perf_counter()
    try:
        result = await awaitable
    except BaseException as exc:
        STATS.record(*key, time.perf_counter() - start, _failed(exc))
        raise
    STATS.record(*key, time.perf_counter() - start, False)
    return result
