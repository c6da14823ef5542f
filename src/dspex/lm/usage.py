"""Token usage per program run: the tracker LM calls record into (DSPy's ``UsageTracker``).

The tracker in force is ``settings.current().usage_tracker`` (set by :func:`track_usage`, or
by a top-level module call when ``track_usage=True`` is configured), so a scoped
``dspex.context(usage_tracker=...)`` and ``dspex.settings.usage_tracker`` mean what they mean
in DSPy.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import Token
from typing import Any

from dspex import settings
from dspex.settings import Settings

__all__ = ["UsageTracker", "current_tracker", "track_usage"]


def _summable(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _merge(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> dict[str, Any]:
    """Sum two usage entries key by key (nested dicts too); ``None`` never overwrites a value."""
    if not a:
        return dict(b or {})
    if not b:
        return dict(a)
    out = dict(a)
    for key, value in b.items():
        have = out.get(key)
        if isinstance(value, dict) or isinstance(have, dict):
            out[key] = _merge(have, value)
        elif have is None:
            if value is not None:
                out[key] = value
        elif _summable(have) and _summable(value):
            out[key] = have + value
    return out


class UsageTracker:
    """Usage entries per model for everything called inside ``track_usage()``."""

    __slots__ = ("calls", "usage_data")

    def __init__(self) -> None:
        self.usage_data: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
        self.calls = 0

    def add_usage(self, lm: str, usage_entry: Mapping[str, Any]) -> None:
        """Record one LM call's usage (empty entries are skipped, as in DSPy)."""
        self.calls += 1
        if usage_entry:
            entry = {
                k: (v.model_dump() if hasattr(v, "model_dump") else v)
                for k, v in usage_entry.items()
            }
            self.usage_data[lm].append(entry)

    add = add_usage

    def get_total_tokens(self) -> dict[str, dict[str, Any]]:
        """Summed usage per model: ``{"openai/gpt-4o-mini": {"prompt_tokens": ..., ...}}``."""
        totals: dict[str, dict[str, Any]] = {}
        for lm, entries in self.usage_data.items():
            total: dict[str, Any] = {}
            for entry in entries:
                total = _merge(total, entry)
            totals[lm] = total
        return totals

    get_lm_usage = get_total_tokens


def current_tracker() -> UsageTracker | None:
    tracker: UsageTracker | None = settings.current().usage_tracker
    return tracker


class _TrackerSlot:
    """``get``/``set``/``reset`` of the tracker in force, ContextVar-style (token restores)."""

    def get(self) -> UsageTracker | None:
        return current_tracker()

    def set(self, tracker: UsageTracker | None) -> Token[Settings | None]:
        return settings.push_scope(settings.current().replace(usage_tracker=tracker))

    def reset(self, token: Token[Settings | None]) -> None:
        settings.pop_scope(token)


_tracker = _TrackerSlot()


@contextmanager
def track_usage() -> Iterator[UsageTracker]:
    """Collect the usage of every LM call in the block; a nested tracker rolls up on exit."""
    tracker = UsageTracker()
    parent = current_tracker()
    with settings.context(usage_tracker=tracker):
        try:
            yield tracker
        finally:
            if parent is not None:
                parent.calls += tracker.calls
                for lm, entries in tracker.usage_data.items():
                    parent.usage_data[lm].extend(entries)
