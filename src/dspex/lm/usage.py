"""Token usage per program run: a context-var tracker the LM records into."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

__all__ = ["UsageTracker", "current_tracker", "track_usage"]


class UsageTracker:
    """Sums token usage per model for everything called inside ``track_usage()``."""

    __slots__ = ("_usage", "calls")

    def __init__(self) -> None:
        self._usage: dict[str, dict[str, int]] = {}
        self.calls = 0

    def add(self, model: str, usage: dict[str, int]) -> None:
        self.calls += 1
        slot = self._usage.setdefault(model, {})
        for key, value in usage.items():
            slot[key] = slot.get(key, 0) + int(value)

    def get_lm_usage(self) -> dict[str, dict[str, Any]]:
        if not self._usage:
            return {}
        return {m: dict(u) for m, u in self._usage.items()}

    def get_total_tokens(self) -> dict[str, dict[str, Any]]:  # DSPy's name
        return self.get_lm_usage()


_tracker: ContextVar[UsageTracker | None] = ContextVar("dspex_usage", default=None)


def current_tracker() -> UsageTracker | None:
    return _tracker.get()


@contextmanager
def track_usage() -> Iterator[UsageTracker]:
    tracker = UsageTracker()
    token = _tracker.set(tracker)
    try:
        yield tracker
    finally:
        _tracker.reset(token)
