"""LM response caches: an in-memory LRU in front of an on-disk SQLite store.

A request is identified by its canonical JSON (sorted keys, credentials never included):
:func:`request_blob`. The memory tier is keyed by that blob itself (exact match, no digest
on the hit path); the SQLite tier by its SHA-256 (:func:`cache_key`), computed only when the
memory tier misses or a response is stored. The memory tier holds immutable values (tuples of
strings) and every hit gets a fresh list, so mutating a result never changes the cache. The
memory tier is bounded by entries and by bytes (prompts can be large). The SQLite file is
opened lazily on first use (never at import).

:class:`Cache` is DSPy's ``dspy.cache`` surface over that one store: which tiers are on, where
the disk tier lives, and DSPy's ``cache_key``/``get``/``put``/``reset_memory_cache``/... The
active one is ``dspex.cache`` (``configure_cache`` installs a new one, as DSPy does; assigning
``dspex.cache`` restores an old one): every LM and Embedder call reads it.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import pickle
import sqlite3
import sys
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import orjson

from dspex.errors import ConfigurationError

__all__ = [
    "Cache",
    "CachedResponse",
    "ResponseCache",
    "active",
    "cache",
    "cache_key",
    "request_blob",
    "shared_cache",
]

logger = logging.getLogger(__name__)

_UNBOUNDED = sys.maxsize

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

    def get(self, blob: bytes, *, memory: bool = True, disk: bool = True) -> CachedResponse | None:
        """The cached response for a request blob (see :func:`request_blob`), or ``None``,
        from the tiers that are on."""
        value = self.get_value(blob, memory=memory, disk=disk)
        if value is None or isinstance(value, _Stored):
            return None
        cached: CachedResponse = value
        return cached

    def put(
        self,
        blob: bytes,
        texts: list[Any],
        usage: dict[str, int],
        *,
        memory: bool = True,
        disk: bool = True,
        memory_entries: int = _UNBOUNDED,
    ) -> None:
        if not (memory or disk):
            return
        value: CachedResponse = (tuple(texts), tuple(usage.items()))
        with self._lock:
            if memory:
                self._remember(blob, value, memory_entries)
            if disk:
                self._write(blob, {"texts": texts, "usage": usage})

    def get_value(self, blob: bytes, *, memory: bool = True, disk: bool = True) -> Any:
        """What is stored for ``blob`` (an LM response, or a :class:`_Stored` value put
        through :meth:`Cache.put`), or ``None``."""
        if not (memory or disk):
            return None
        with self._lock:
            entry = self._memory.get(blob) if memory else None
            if entry is not None:
                self._memory.move_to_end(blob)
                return entry[0]
            if not disk:
                return None
            row = (
                self._conn()
                .execute("SELECT value FROM responses WHERE key = ?", (cache_key(blob),))
                .fetchone()
            )
            if row is None:
                return None
            value = _thaw(orjson.loads(bytes(row[0])))
            if value is not None and memory:
                self._remember(blob, value, _UNBOUNDED)
            return value

    def put_value(
        self, blob: bytes, value: Any, *, memory: bool, disk: bool, memory_entries: int
    ) -> None:
        """Store any value (DSPy's ``cache.put``): in memory as it is, on disk when it is
        JSON (numpy arrays become lists); the disk tier never holds pickles."""
        stored = _Stored(value)
        with self._lock:
            if memory:
                self._remember(blob, stored, memory_entries)
            if disk:
                try:
                    self._write(blob, {"value": value})
                except TypeError as exc:
                    logger.debug("cache: value not stored on disk (not JSON): %s", exc)

    def _write(self, blob: bytes, row: dict[str, Any]) -> None:
        data = orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY)
        self._conn().execute(
            "INSERT OR REPLACE INTO responses (key, value) VALUES (?, ?)", (cache_key(blob), data)
        )

    def __contains__(self, blob: object) -> bool:
        return isinstance(blob, bytes) and self.get_value(blob) is not None

    def memory_items(self) -> list[tuple[bytes, Any]]:
        with self._lock:
            return [(blob, entry[0]) for blob, entry in self._memory.items()]

    def replace_memory(self, items: list[tuple[bytes, Any]], memory_entries: int) -> None:
        with self._lock:
            self._memory.clear()
            self._bytes = 0
            for blob, value in items:
                self._remember(blob, value, memory_entries)

    def _remember(self, blob: bytes, value: Any, memory_entries: int) -> None:
        texts = value[0] if isinstance(value, tuple) else ()
        size = len(blob) + sum(len(t) if isinstance(t, str) else 1000 for t in texts) + 200
        old = self._memory.pop(blob, None)
        if old is not None:
            self._bytes -= old[1]
        self._memory[blob] = (value, size)
        self._bytes += size
        while len(self._memory) > min(self.memory_size, memory_entries) or (
            self._bytes > self.memory_bytes and len(self._memory) > 1
        ):
            self._bytes -= self._memory.popitem(last=False)[1][1]

    def disk_has(self, key: str) -> bool:
        with self._lock:
            found = self._conn().execute("SELECT 1 FROM responses WHERE key = ?", (key,))
            return found.fetchone() is not None

    def disk_len(self) -> int:
        with self._lock:
            return int(self._conn().execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def clear_memory(self) -> None:
        with self._lock:
            self._memory.clear()
            self._bytes = 0

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


class _Stored:
    """A value stored through DSPy's ``cache.put`` (not an LM response)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def _thaw(stored: Any) -> CachedResponse | _Stored | None:
    if not isinstance(stored, dict):
        return None
    if "value" in stored:
        return _Stored(stored["value"])
    usage = stored.get("usage") or {}
    return (
        tuple(t if isinstance(t, dict) else str(t) for t in stored.get("texts") or ()),
        tuple((str(k), int(v)) for k, v in usage.items()),
    )


_caches: dict[Path, ResponseCache] = {}
_caches_lock = threading.Lock()


def shared_cache(directory: Path) -> ResponseCache:
    """One store per directory per process (LM instances share it, as in DSPy)."""
    found = _caches.get(directory)  # lock-free fast path: entries are never removed
    if found is not None:
        return found
    with _caches_lock:
        found = _caches.get(directory)
        if found is None:
            found = _caches[directory] = ResponseCache(directory)
        return found


class Cache:
    """DSPy's ``dspy.clients.cache.Cache`` over DSPEx's response store.

    ``enable_memory_cache``/``enable_disk_cache`` switch the tiers (both off: nothing is read
    or written); ``disk_cache_dir`` is where the SQLite tier lives (``None``: the current
    ``settings.cache_dir``); ``memory_max_entries`` bounds the memory tier. The disk tier
    stores JSON, never pickles, so ``restrict_pickle``/``safe_types`` hold by construction;
    ``disk_size_limit_bytes`` has no equivalent (the SQLite file is not trimmed).
    """

    def __init__(
        self,
        enable_disk_cache: bool = True,
        enable_memory_cache: bool = True,
        disk_cache_dir: str | os.PathLike[str] | None = None,
        disk_size_limit_bytes: int | None = None,
        memory_max_entries: float = 1_000_000,
        restrict_pickle: bool = False,
        safe_types: list[type[Any]] | None = None,
    ) -> None:
        if enable_memory_cache and (memory_max_entries is None or memory_max_entries <= 0):
            raise ConfigurationError(
                f"memory_max_entries must be a positive number, got {memory_max_entries!r}"
            )
        for kind in safe_types or []:
            if not isinstance(kind, type):
                raise TypeError(f"safe_types entries must be types, got {kind!r}")
        self.enable_disk_cache = bool(enable_disk_cache)
        self.enable_memory_cache = bool(enable_memory_cache)
        self.disk_cache_dir = os.fspath(disk_cache_dir) if disk_cache_dir is not None else None
        self.disk_size_limit_bytes = disk_size_limit_bytes
        self.memory_max_entries = memory_max_entries
        self.restrict_pickle = restrict_pickle
        self._entries = int(min(memory_max_entries or 1, _UNBOUNDED))

    def __repr__(self) -> str:
        return (
            f"Cache(enable_disk_cache={self.enable_disk_cache}, "
            f"enable_memory_cache={self.enable_memory_cache}, directory={str(self.directory)!r})"
        )

    @property
    def directory(self) -> Path:
        if self.disk_cache_dir is not None:
            return Path(self.disk_cache_dir)
        from dspex import settings

        return settings.current().cache_dir

    @property
    def store(self) -> ResponseCache:
        return shared_cache(self.directory)

    @property
    def enabled(self) -> bool:
        return self.enable_memory_cache or self.enable_disk_cache

    # ------------------------------------------------------------------ LM responses
    def lookup(self, blob: bytes) -> CachedResponse | None:
        """An LM response for a request blob from the tiers that are on (no I/O when off)."""
        if not self.enabled:
            return None
        return self.store.get(blob, memory=self.enable_memory_cache, disk=self.enable_disk_cache)

    def save(self, blob: bytes, texts: list[Any], usage: dict[str, int]) -> None:
        if self.enabled:
            self.store.put(
                blob, texts, usage, memory=self.enable_memory_cache,
                disk=self.enable_disk_cache, memory_entries=self._entries,
            )  # fmt: skip

    # ------------------------------------------------------------------ DSPy's surface
    def cache_key(
        self, request: dict[str, Any], ignored_args_for_cache_key: list[str] | None = None
    ) -> str:
        """SHA-256 of the request's canonical JSON (sorted keys), ignored keys left out."""
        return cache_key(self._blob(request, ignored_args_for_cache_key))

    def get(
        self, request: dict[str, Any], ignored_args_for_cache_key: list[str] | None = None
    ) -> Any:
        """The value stored for ``request`` (a copy), or ``None``."""
        if not self.enabled:
            return None
        value = self.store.get_value(
            self._blob(request, ignored_args_for_cache_key),
            memory=self.enable_memory_cache, disk=self.enable_disk_cache,
        )  # fmt: skip
        if isinstance(value, _Stored):
            return copy.deepcopy(value.value)
        return copy.deepcopy(value)

    def put(
        self,
        request: dict[str, Any],
        value: Any,
        ignored_args_for_cache_key: list[str] | None = None,
        enable_memory_cache: bool = True,
    ) -> None:
        memory = self.enable_memory_cache and enable_memory_cache
        if not (memory or self.enable_disk_cache):
            return
        self.store.put_value(
            self._blob(request, ignored_args_for_cache_key), value, memory=memory,
            disk=self.enable_disk_cache, memory_entries=self._entries,
        )  # fmt: skip

    def __contains__(self, key: object) -> bool:
        """``key``: a :meth:`cache_key` digest (or a request dict) held in either tier."""
        if isinstance(key, dict):
            return self.get(key) is not None
        return key in self.memory_cache or key in self.disk_cache

    def reset_memory_cache(self) -> None:
        if self.enable_memory_cache:
            self.store.clear_memory()

    def save_memory_cache(self, filepath: str | os.PathLike[str]) -> None:
        """Write the memory tier to ``filepath`` (a pickle, as DSPy's)."""
        if self.enable_memory_cache:
            with open(filepath, "wb") as f:
                pickle.dump(self.store.memory_items(), f)

    def load_memory_cache(
        self, filepath: str | os.PathLike[str], allow_pickle: bool = False
    ) -> None:
        """Replace the memory tier with a :meth:`save_memory_cache` file. Unpickling runs
        code: only with ``allow_pickle=True``, for a trusted file (DSPy's rule)."""
        if not allow_pickle:
            raise ConfigurationError(
                "Loading untrusted .pkl files can run arbitrary code, which may be dangerous. "
                "Set `allow_pickle=True` to load if you are running in a trusted environment "
                "and the file is from a trusted source."
            )
        if self.enable_memory_cache:
            with open(filepath, "rb") as f:
                items = pickle.load(f)  # the caller vouched for the file (allow_pickle)
            self.store.replace_memory(list(items), self._entries)

    @property
    def memory_cache(self) -> dict[str, Any]:
        """A snapshot of the memory tier by :meth:`cache_key` digest."""
        if not self.enable_memory_cache:
            return {}
        return {cache_key(blob): _plain(v) for blob, v in self.store.memory_items()}

    @property
    def disk_cache(self) -> _DiskView | dict[str, Any]:
        """The disk tier by :meth:`cache_key` digest (``in``, ``len``, ``close``)."""
        return _DiskView(self.store) if self.enable_disk_cache else {}

    def _blob(self, request: dict[str, Any], ignored: list[str] | None) -> bytes:
        if ignored:
            request = {k: v for k, v in request.items() if k not in ignored}
        return request_blob(request)


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, _Stored) else value


class _DiskView:
    """The SQLite tier as DSPy's tests look at ``cache.disk_cache``."""

    def __init__(self, store: ResponseCache) -> None:
        self._store = store

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._store.disk_has(key)

    def __len__(self) -> int:
        return self._store.disk_len()

    def close(self) -> None:
        self._store.close()


def active() -> Cache:
    """The cache every LM and Embedder call uses now: ``dspex.cache``."""
    module = sys.modules.get("dspex")
    found = getattr(module, "cache", None) if module is not None else None
    return found if isinstance(found, Cache) else cache


#: the default cache (tiers on, disk under ``settings.cache_dir``): ``dspex.cache`` at start
cache = Cache()


def install(new: Cache) -> None:
    """Make ``new`` the active cache (``dspex.cache``); its memory tier starts empty."""
    import dspex

    dspex.cache = new
    new.store.clear_memory()


def set_tiers(
    *, memory: bool = True, disk: bool = True, memory_max_entries: int | None = None
) -> None:
    """Install a cache with these tiers over the current ``settings.cache_dir`` (with no
    arguments: the default cache, as ``reset_defaults`` does)."""
    install(Cache(disk, memory, None, memory_max_entries=memory_max_entries or 1_000_000))


def tiers() -> tuple[bool, bool]:
    """(memory tier on, disk tier on) of the active cache."""
    current = active()
    return current.enable_memory_cache, current.enable_disk_cache
