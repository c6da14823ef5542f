"""The event bus: attach/detach handlers by prefix, emit events, time spans."""

from __future__ import annotations

import logging
import threading
import time
import types
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ATTACHED",
    "Handler",
    "attach",
    "attached",
    "capture",
    "detach",
    "emit",
    "has_handlers",
    "span",
]

Handler = Callable[[str, Mapping[str, float], Mapping[str, Any]], None]

_log = logging.getLogger("dspex.telemetry")
# Reentrant: a garbage-collected generator holding a span (closed by GC while this lock is
# held, e.g. during the allocation in _matching) emits from inside the locked block.
_lock = threading.RLock()
_handlers: dict[int, tuple[str, Handler]] = {}
_next_id = 0
ATTACHED: Mapping[int, tuple[str, Handler]] = types.MappingProxyType(_handlers)
"""The attached handlers, read-only: truthy while any is attached (:func:`has_handlers`
without a call, for per-call hot paths)."""
# event name -> handlers whose prefix matches; rebuilt lazily after attach/detach.
_resolved: dict[str, tuple[Handler, ...]] = {}
_EMPTY: Mapping[str, Any] = {}


def attach(prefix: str, handler: Handler) -> int:
    """Deliver every event whose name equals ``prefix`` or starts with ``prefix + "."``.

    ``""`` or ``"*"`` matches every event. Returns a handle for :func:`detach`.
    """
    global _next_id
    if not callable(handler):
        from dspex.errors import ConfigurationError

        raise ConfigurationError(f"telemetry handler must be callable, got {handler!r}")
    with _lock:
        _next_id += 1
        _handlers[_next_id] = ("" if prefix == "*" else prefix, handler)
        _resolved.clear()
        return _next_id


def detach(handle: int) -> bool:
    """Remove a handler; returns whether it was attached."""
    with _lock:
        removed = _handlers.pop(handle, None) is not None
        _resolved.clear()
        return removed


def has_handlers() -> bool:
    """Cheap check before building expensive metadata."""
    return bool(_handlers)


def _matching(event: str) -> tuple[Handler, ...]:
    found = _resolved.get(event)
    if found is None:
        with _lock:
            found = tuple(
                h
                for prefix, h in _handlers.values()
                if not prefix or event == prefix or event.startswith(prefix + ".")
            )
            _resolved[event] = found
    return found


def emit(
    event: str,
    measurements: Mapping[str, float] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Send one event to the handlers attached to its prefixes."""
    if not _handlers:
        return
    for handler in _matching(event):
        try:
            handler(event, measurements or _EMPTY, metadata or _EMPTY)
        except Exception:
            _log.exception("telemetry handler %r failed on %s", handler, event)


@contextmanager
def span(event: str, metadata: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    """Emit ``<event>.start`` then ``<event>.stop`` (or ``<event>.exception`` and
    ``dspex.error.<ExceptionClass>``) with duration.

    The yielded dict is the metadata; add to it inside the block and the stop event carries it.
    """
    meta: dict[str, Any] = metadata if metadata is not None else {}
    if not _handlers:
        yield meta
        return
    start = time.perf_counter()
    emit(event + ".start", {"system_time": time.time()}, meta)
    try:
        yield meta
    except BaseException as exc:
        meta["error"] = type(exc).__name__
        duration = {"duration": time.perf_counter() - start}
        emit(event + ".exception", duration, meta)
        emit(f"dspex.error.{type(exc).__name__}", duration, {**meta, "event": event})
        raise
    emit(event + ".stop", {"duration": time.perf_counter() - start}, meta)


@dataclass
class Captured:
    """Events recorded by :func:`capture`: ``(event, measurements, metadata)`` tuples."""

    events: list[tuple[str, dict[str, float], dict[str, Any]]] = field(default_factory=list)

    def named(self, event: str) -> list[tuple[str, dict[str, float], dict[str, Any]]]:
        return [e for e in self.events if e[0] == event]

    def names(self) -> list[str]:
        return [e[0] for e in self.events]


@contextmanager
def capture(prefix: str = "") -> Iterator[Captured]:
    """Record events for the block (for tests and debugging)."""
    captured = Captured()

    def record(event: str, measurements: Mapping[str, float], metadata: Mapping[str, Any]) -> None:
        captured.events.append((event, dict(measurements), dict(metadata)))

    handle = attach(prefix, record)
    try:
        yield captured
    finally:
        detach(handle)


@contextmanager
def attached(prefix: str, handler: Handler) -> Iterator[int]:
    """Attach ``handler`` for the duration of the block."""
    handle = attach(prefix, handler)
    try:
        yield handle
    finally:
        detach(handle)
