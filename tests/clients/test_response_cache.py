"""``dspex.cache``: DSPy's ``dspy.cache`` surface over the one LM response store that every
LM and Embedder call reads (tiers, directory, DSPy's get/put/cache_key, memory snapshots)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest import mock

import pytest

import dspex
from dspex.clients.cache import Cache
from dspex.errors import ConfigurationError
from dspex.testing import LMServer

MSGS = [{"role": "user", "content": "hello"}]


def lm_for(server: LMServer, model: str = "openai/cached") -> dspex.LM:
    return dspex.LM(model, api_base=server.url, api_key="k", num_retries=0)


def test_dspex_cache_is_the_active_cache_and_configure_cache_replaces_it(
    server: LMServer, tmp_path: Path
) -> None:
    server.clear()
    original = dspex.cache
    assert isinstance(original, Cache) and original.enable_memory_cache
    lm = lm_for(server)
    lm(messages=MSGS)
    lm(messages=MSGS)
    assert len(server.requests) == 1  # the default cache answered the second call

    dspex.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    off = dspex.cache
    assert off is not original and not (off.enable_memory_cache or off.enable_disk_cache)
    lm(messages=MSGS)
    assert len(server.requests) == 2  # nothing is read while both tiers are off

    dspex.cache = original  # as DSPy's tests restore it: its tiers are back
    lm(messages=MSGS)
    assert len(server.requests) == 2

    dspex.configure_cache(disk_cache_dir=tmp_path / "elsewhere")
    assert dspex.cache.directory == tmp_path / "elsewhere"
    assert dspex.current().cache_dir == tmp_path / "elsewhere"
    assert len(dspex.cache.memory_cache) == 0  # a new cache starts with an empty memory
    lm(messages=MSGS)
    assert len(server.requests) == 3
    assert (tmp_path / "elsewhere" / "lm_cache.sqlite").exists()


def test_a_disabled_cache_computes_no_key(server: LMServer) -> None:
    dspex.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    lm = lm_for(server, "openai/nokey")
    with mock.patch("dspex.lm.client.request_blob") as blob:
        assert lm(messages=MSGS)
    blob.assert_not_called()


def test_memory_and_disk_views_follow_an_lm_call(server: LMServer) -> None:
    cache = dspex.cache
    lm_for(server, "openai/views")(messages=MSGS)
    assert len(cache.memory_cache) == 1
    key = next(iter(cache.memory_cache))
    assert key in cache.disk_cache and key in cache and len(cache.disk_cache) == 1
    cache.reset_memory_cache()
    assert len(cache.memory_cache) == 0 and key in cache.disk_cache


def test_dspy_get_put_and_cache_key() -> None:
    np = pytest.importorskip("numpy")
    cache = dspex.cache
    request = {"model": "m", "prompt": "p", "api_key": "secret"}
    assert cache.get(request) is None
    value = {"answer": [1, 2]}
    cache.put(request, value, ignored_args_for_cache_key=["api_key"])
    got = cache.get({**request, "api_key": "other"}, ignored_args_for_cache_key=["api_key"])
    assert got == value and got is not value  # a copy: mutating it changes nothing stored
    got["answer"].append(3)
    assert cache.get(request, ["api_key"]) == value
    assert cache.cache_key(request, ["api_key"]) == cache.cache_key({"prompt": "p", "model": "m"})

    cache.put({"q": 1}, np.array([[0.5, 1.0]], dtype=np.float32))
    cache.put({"q": 2}, object())  # not JSON: kept in memory only
    cache.reset_memory_cache()
    assert cache.get({"q": 1}) == [[0.5, 1.0]]  # from the disk tier, as JSON
    assert cache.get({"q": 2}) is None

    memory_only = Cache(enable_disk_cache=False, enable_memory_cache=True)
    memory_only.put({"q": 3}, "x")
    assert memory_only.get({"q": 3}) == "x"
    assert Cache(False, False, None).get({"q": 3}) is None


def test_memory_cache_save_and_load_need_the_pickle_opt_in(tmp_path: Path) -> None:
    cache = dspex.cache
    cache.put({"q": "saved"}, "value")
    path = tmp_path / "memory.pkl"
    cache.save_memory_cache(path)
    cache.reset_memory_cache()
    dspex.configure_cache(enable_disk_cache=False)
    with pytest.raises(ConfigurationError, match="allow_pickle=True"):
        dspex.cache.load_memory_cache(path)
    assert dspex.cache.get({"q": "saved"}) is None
    dspex.cache.load_memory_cache(path, allow_pickle=True)
    assert dspex.cache.get({"q": "saved"}) == "value"


def test_bad_cache_settings_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="memory_max_entries"):
        dspex.configure_cache(memory_max_entries=0)
    with pytest.raises(TypeError, match="safe_types"):
        Cache(True, True, None, safe_types=["not a type"])  # type: ignore[list-item]


def test_memory_max_entries_bounds_the_memory_tier(server: LMServer) -> None:
    dspex.configure_cache(enable_disk_cache=False, memory_max_entries=2)
    lm = lm_for(server, "openai/bounded")
    for text in ("a", "b", "c"):
        lm(text)
    assert len(dspex.cache.memory_cache) == 2


def test_embedder_caches_in_the_active_cache_with_call_overrides(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    calls: list[list[str]] = []

    def embed(texts: list[str]) -> Any:
        calls.append(texts)
        return np.ones((len(texts), 3), dtype=np.float32)

    dspex.configure_cache(disk_cache_dir=tmp_path / "embeddings")
    embedder = dspex.Embedder(embed)
    embedder(["x", "y"])
    embedder(["x", "y"])
    assert len(calls) == 1
    dspex.cache.reset_memory_cache()
    embedder(["x", "y"])
    assert len(calls) == 1  # answered from the disk tier
    embedder(["x", "y"], caching=False)
    assert len(calls) == 2
    uncached = dspex.Embedder(embed, caching=False)
    uncached(["z"], caching=True)
    uncached(["z"], caching=True)
    assert len(calls) == 3
    dspex.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    embedder(["x", "y"])
    assert len(calls) == 4


@pytest.mark.dspy
def test_cache_keys_match_dspy() -> None:
    pytest.importorskip("dspy")
    from dspy.clients.cache import Cache as DSPyCache

    theirs = DSPyCache(False, False, None)
    for request in (
        {"model": "openai/m", "messages": MSGS, "temperature": 0.0},
        {"b": [1, 2, {"z": None}], "a": "é"},
    ):
        assert dspex.cache.cache_key(request) == theirs.cache_key(request)
        assert dspex.cache.cache_key(request, ["a"]) == theirs.cache_key(request, ["a"])
