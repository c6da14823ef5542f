"""The fan-out's per-call decisions: which LM classes may need the sync path (read live from
the class tree, so a class defined or patched later is seen), and the direct module entry
(``acall_awaitable``) a fan-out awaits instead of ``acall``."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import dspex
from dspex.errors import CallError
from dspex.modules.executor import customized_sync_lm, lm_classes_may_customize
from dspex.modules.parallel import Parallel
from dspex.primitives.module import ACALL, acall_awaitable
from dspex.testing.dummy import DummyLM


def _tree() -> tuple[type, type, type]:
    """A private LM-like class tree: a root defining both calls, an async-first child."""

    class Root:
        def __call__(self) -> str:
            return "sync"

        async def acall(self) -> str:
            return "async"

    class AsyncFirst(Root):
        async def acall(self) -> str:
            return "child"

    class Both(AsyncFirst):
        def __call__(self) -> str:
            return "both"

        async def acall(self) -> str:
            return "both"

    return Root, AsyncFirst, Both


def test_a_tree_without_a_lone_sync_call_cannot_customize() -> None:
    root, _, _ = _tree()
    assert lm_classes_may_customize(root) is False


def test_a_class_defining_call_alone_is_seen_when_defined_later() -> None:
    root, async_first, _ = _tree()
    assert lm_classes_may_customize(root) is False

    class Counting(async_first):  # type: ignore[valid-type,misc]
        def __call__(self) -> str:
            return "counted"

    assert lm_classes_may_customize(root) is True
    del Counting.__call__  # now it defines neither: nothing can customize
    assert lm_classes_may_customize(root) is False


def test_a_method_assigned_to_a_class_later_is_seen() -> None:
    root, _, both = _tree()
    assert lm_classes_may_customize(root) is False
    del both.acall  # __call__ alone on Both, below AsyncFirst's acall
    assert lm_classes_may_customize(root) is True
    both.acall = root.acall  # type: ignore[attr-defined]
    assert lm_classes_may_customize(root) is False


def test_mixins_bringing_a_call_count() -> None:
    root, _, _ = _tree()

    class Harmless:
        def helper(self) -> None: ...

    class Mixed(Harmless, root):  # type: ignore[valid-type,misc]
        pass

    assert lm_classes_may_customize(root) is False  # a mixin with neither call

    class SyncMixin:
        def __call__(self) -> str:
            return "mixin"

    class Mixed2(SyncMixin, root):  # type: ignore[valid-type,misc]
        pass

    assert lm_classes_may_customize(root) is True
    assert Mixed and Mixed2


def test_lm_class_patched_between_parallel_calls_is_seen() -> None:
    """A class whose ``__call__`` is assigned after a first Parallel call: the next call runs
    the override (nothing about the class was kept from the first call)."""

    class Later(DummyLM):
        pass

    lm = Later([{"answer": "a"}] * 4)
    pairs = [(dspex.Predict("question -> answer"), {"question": f"q{i}"}) for i in range(2)]
    for predict, _ in pairs:
        predict.lm = lm
    par = Parallel(num_threads=2, disable_progress_bar=True)
    assert [r.answer for r in par(pairs)] == ["a", "a"]
    threads: list[str] = []

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread().name)
        return DummyLM.__call__(self, *args, **kwargs)

    Later.__call__ = counting  # type: ignore[method-assign]
    try:
        assert customized_sync_lm(pairs[0][0]) is True
        assert [r.answer for r in par(pairs)] == ["a", "a"]
        assert len(threads) == 2  # the override ran for both pairs
    finally:
        del Later.__call__
    assert customized_sync_lm(pairs[0][0]) is False


class _Upper(dspex.Module):
    async def aforward(self, text: str) -> Any:
        return dspex.Prediction(text=text.upper())


class _OwnAcall(dspex.Module):
    def forward(self, text: str) -> Any:
        return dspex.Prediction(text=text)

    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        return dspex.Prediction(text="own acall")


def test_acall_awaitable_is_what_acall_awaits() -> None:
    module = _Upper()
    inputs = {"text": "abc"}
    direct = asyncio.run(acall_awaitable(module, (), inputs))
    assert direct == asyncio.run(module.acall(**inputs))
    assert inputs == {"text": "abc"}  # the caller's dict is not changed
    assert type(module).acall is ACALL


def test_acall_awaitable_raises_the_positional_error_at_once() -> None:
    predict = dspex.Predict("question -> answer")
    with pytest.raises(CallError, match="Positional arguments are not allowed"):
        acall_awaitable(predict, ("q",), {})
    coro = predict.acall("q")  # acall itself raises it when awaited, as before
    with pytest.raises(CallError, match="Positional arguments are not allowed"):
        asyncio.run(coro)


def test_parallel_keeps_a_modules_own_acall() -> None:
    pairs = [(_OwnAcall(), {"text": "x"}), (_Upper(), {"text": "y"})]
    results = Parallel(num_threads=2, disable_progress_bar=True)(pairs)
    assert [r.text for r in results] == ["own acall", "Y"]


def test_parallel_calls_an_instances_own_acall() -> None:
    module = _Upper()

    async def patched(**kwargs: Any) -> Any:
        return dspex.Prediction(text="instance acall")

    module.acall = patched  # type: ignore[method-assign]
    results = Parallel(num_threads=2, disable_progress_bar=True)([(module, {"text": "z"})])
    assert [r.text for r in results] == ["instance acall"]
