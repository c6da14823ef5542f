"""LM response caches: an in-memory LRU in front of an on-disk SQLite store.

Keys hash the request minus credentials. Values are lists of completion texts plus usage;
callers always get fresh copies, so mutating a result never changes the cache. The SQLite
file is opened lazily on first use (never at import).
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import orjson

__all__ = ["ResponseCache", "cache_key", "shared_cache"]


def cache_key(request: dict[str, Any]) -> str:
    blob = orjson.dumps(request, option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.sha256(blob).hexdigest()


class ResponseCache:
    def __init__(self, directory: Path, memory_size: int = 10_000) -> None:
        self.directory = directory
        self.memory_size = memory_size
        self._memory: OrderedDict[str, bytes] = OrderedDict()
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

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            blob = self._memory.get(key)
            if blob is not None:
                self._memory.move_to_end(key)
            else:
                row = (
                    self._conn()
                    .execute("SELECT value FROM responses WHERE key = ?", (key,))
                    .fetchone()
                )
                if row is None:
                    return None
                blob = bytes(row[0])
                self._remember(key, blob)
        value: dict[str, Any] = orjson.loads(blob)  # a fresh copy for every hit
        return value

    def put(self, key: str, value: dict[str, Any]) -> None:
        blob = orjson.dumps(value)
        with self._lock:
            self._remember(key, blob)
            self._conn().execute(
                "INSERT OR REPLACE INTO responses (key, value) VALUES (?, ?)", (key, blob)
            )

    def _remember(self, key: str, blob: bytes) -> None:
        self._memory[key] = blob
        self._memory.move_to_end(key)
        while len(self._memory) > self.memory_size:
            self._memory.popitem(last=False)

    def clear_memory(self) -> None:
        with self._lock:
            self._memory.clear()

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


_caches: dict[Path, ResponseCache] = {}
_caches_lock = threading.Lock()


def shared_cache(directory: Path) -> ResponseCache:
    """One cache per directory per process (LM instances share it, as in DSPy)."""
    with _caches_lock:
        cache = _caches.get(directory)
        if cache is None:
            cache = _caches[directory] = ResponseCache(directory)
        return cache
