from __future__ import annotations

import asyncio
import threading

import pytest

import dspex
from dspex.errors import ConfigurationError


def test_configure_and_reset() -> None:
    dspex.configure(prefer_native="dspy_first")
    assert dspex.current().prefer_native == "dspy_first"
    dspex.reset_defaults()
    assert dspex.current().prefer_native == "auto"


def test_unknown_and_invalid_settings_raise_typed_errors() -> None:
    with pytest.raises(ConfigurationError, match="unknown setting"):
        dspex.configure(lmm=None)
    with pytest.raises(ConfigurationError, match="prefer_native"):
        dspex.configure(prefer_native="sometimes")
    with pytest.raises(ConfigurationError, match="compare_sample_rate"):
        dspex.configure(compare_sample_rate=2)
    with pytest.raises(ConfigurationError, match="implementation_overrides"):
        dspex.configure(implementation_overrides={"react": "java"})
    assert dspex.current().prefer_native == "auto"  # nothing half-applied


def test_context_is_scoped_and_restored() -> None:
    with dspex.context(prefer_native="native_first"):
        assert dspex.current().prefer_native == "native_first"
        with dspex.context(allow_fallback=False):
            assert dspex.current().prefer_native == "native_first"
            assert dspex.current().allow_fallback is False
        assert dspex.current().allow_fallback is True
    assert dspex.current().prefer_native == "auto"


def test_context_does_not_leak_across_threads_or_tasks() -> None:
    seen: list[str] = []

    def other_thread() -> None:
        seen.append(dspex.current().prefer_native)

    async def task(pref: str) -> str:
        with dspex.context(prefer_native=pref):
            await asyncio.sleep(0.01)
            return dspex.current().prefer_native

    with dspex.context(prefer_native="dspy_first"):
        t = threading.Thread(target=other_thread)
        t.start()
        t.join()

    async def both() -> list[str]:
        return list(await asyncio.gather(task("native_first"), task("dspy_first")))

    assert seen == ["auto"]
    assert asyncio.run(both()) == ["native_first", "dspy_first"]


def test_hot_path_accessors_are_the_scoped_settings() -> None:
    from dspex import settings

    assert settings.scoped() is None  # outside every context()
    with dspex.context(max_errors=3) as inside:
        assert settings.scoped() is inside
        assert (settings.scoped() or settings.current()) is settings.current()
    pushed = settings.current().replace(max_errors=7)
    token = settings.push_scope(pushed)
    try:
        assert settings.current() is pushed and settings.scoped() is pushed
    finally:
        settings.pop_scope(token)
    assert settings.scoped() is None and settings.current().max_errors != 7
