"""LM response caches: an in-memory LRU in front of an on-disk SQLite store.

A request is identified by its canonical JSON (sorted keys, credentials never included):
:func:`request_blob`. The memory tier is keyed by that blob itself (exact match, no digest
on the hit path); the SQLite tier by its SHA-256 (:func:`cache_key`), computed only when the
memory tier misses or a response is stored. The memory tier holds immutable values (tuples of
strings) and every hit gets a fresh list, so mutating a result never changes the cache. The
memory tier is bounded by entries and by bytes (prompts can be large). The SQLite file is
opened lazily on first use (never at import).
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import orjson

__all__ = ["CachedResponse", "ResponseCache", "cache_key", "request_blob", "shared_cache"]

#: texts of every choice, and token usage as ``(name, count)`` pairs; immutable
CachedResponse = tuple[tuple[Any, ...], tuple[tuple[str, int], ...]]


def request_blob(request: dict[str, Any]) -> bytes:
    """The canonical bytes of a request (what the cache is keyed on)."""
    return orjson.dumps(request, option=orjson.OPT_SORT_KEYS, default=str)


def cache_key(request: dict[str, Any] | bytes) -> str:
    """The on-disk key: SHA-256 of the canonical request."""
    blob = request if isinstance(request, bytes) else request_blob(request)
    return hashlib.sha256(blob).hexdigest()


class ResponseCache:
    def __init__(
        self, directory: Path, memory_size: int = 10_000, memory_bytes: int = 64 << 20
    ) -> None:
        self.directory = directory
        self.memory_size = memory_size
        self.memory_bytes = memory_bytes
        self._memory: OrderedDict[bytes, tuple[CachedResponse, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(
                self.directory / "lm_cache.sqlite", check_same_thread=False, isolation_level=None
            )
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value BLOB NOT NULL)"
            )
            self._db = db
        return self._db

    def get(self, blob: bytes) -> CachedResponse | None:
        """The cached response for a request blob (see :func:`request_blob`), or ``None``
        (always ``None`` with both tiers switched off by :func:`set_tiers`)."""
        memory_on, disk_on = _TIERS.memory, _TIERS.disk
        if not (memory_on or disk_on):
            return None
        with self._lock:
            entry = self._memory.get(blob) if memory_on else None
            if entry is not None:
                self._memory.move_to_end(blob)
                return entry[0]
            if not disk_on:
                return None
            row = (
                self._conn()
                .execute("SELECT value FROM responses WHERE key = ?", (cache_key(blob),))
                .fetchone()
            )
            if row is None:
                return None
            value = _freeze(orjson.loads(bytes(row[0])))
            if memory_on:
                self._remember(blob, value)
            return value

    def put(self, blob: bytes, texts: list[Any], usage: dict[str, int]) -> None:
        memory_on, disk_on = _TIERS.memory, _TIERS.disk
        if not (memory_on or disk_on):
            return
        value: CachedResponse = (tuple(texts), tuple(usage.items()))
        with self._lock:
            if memory_on:
                self._remember(blob, value)
            if disk_on:
                self._conn().execute(
                    "INSERT OR REPLACE INTO responses (key, value) VALUES (?, ?)",
                    (cache_key(blob), orjson.dumps({"texts": texts, "usage": usage})),
                )

    def _remember(self, blob: bytes, value: CachedResponse) -> None:
        size = len(blob) + sum(len(t) if isinstance(t, str) else 1000 for t in value[0]) + 200
        old = self._memory.pop(blob, None)
        if old is not None:
            self._bytes -= old[1]
        self._memory[blob] = (value, size)
        self._bytes += size
        while len(self._memory) > min(self.memory_size, _TIERS.memory_entries) or (
            self._bytes > self.memory_bytes and len(self._memory) > 1
        ):
            self._bytes -= self._memory.popitem(last=False)[1][1]

    def clear_memory(self) -> None:
        with self._lock:
            self._memory.clear()
            self._bytes = 0

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def _freeze(stored: dict[str, Any]) -> CachedResponse:
    usage = stored.get("usage") or {}
    return (
        tuple(t if isinstance(t, dict) else str(t) for t in stored["texts"]),
        tuple((str(k), int(v)) for k, v in usage.items()),
    )


class _Tiers:
    """Which cache tiers are on, process-wide (DSPy's ``configure_cache`` switches)."""

    __slots__ = ("disk", "memory", "memory_entries")

    def __init__(self) -> None:
        self.memory = True
        self.disk = True
        self.memory_entries = 10_000


_TIERS = _Tiers()
_caches: dict[Path, ResponseCache] = {}
_caches_lock = threading.Lock()


def set_tiers(
    *, memory: bool = True, disk: bool = True, memory_max_entries: int | None = None
) -> None:
    """Switch the in-memory and on-disk tiers of every response cache on or off (a tier
    switched off is neither read nor written; the memory tier is emptied). Both off: LM
    calls are never answered from, nor stored in, a cache."""
    with _caches_lock:
        _TIERS.memory, _TIERS.disk = bool(memory), bool(disk)
        _TIERS.memory_entries = 10_000 if memory_max_entries is None else memory_max_entries
        caches = list(_caches.values())
    for cache in caches:
        if not memory or memory_max_entries is not None:
            cache.clear_memory()


def tiers() -> tuple[bool, bool]:
    """(memory tier on, disk tier on)."""
    return _TIERS.memory, _TIERS.disk


def shared_cache(directory: Path) -> ResponseCache:
    """One cache per directory per process (LM instances share it, as in DSPy)."""
    cache = _caches.get(directory)  # lock-free fast path: entries are never removed
    if cache is not None:
        return cache
    with _caches_lock:
        cache = _caches.get(directory)
        if cache is None:
            cache = _caches[directory] = ResponseCache(directory)
        return cache
