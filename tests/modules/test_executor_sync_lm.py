"""``customized_sync_lm``: which programs the fan-out runners call the sync way.

An LM class whose sync ``__call__`` overrides its ``acall`` (a counting/sleeping test double)
must be reached through ``__call__`` by ``Evaluate``/``Parallel``/``batch``, as DSPy calls
programs synchronously. The check has a fast path for a plain ``Predict`` and reads each LM
class afresh (no per-class cache); these tests pin it to the full walk's answers.
"""

from __future__ import annotations

import threading
from typing import Any

import dspex
from dspex.modules.executor import customized_sync_lm
from dspex.modules.parallel import Parallel
from dspex.testing.dummy import DummyLM


class CountingLM(DummyLM):
    """Overrides the sync call below ``acall``: must be called the sync way."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.threads: list[str] = []

    def __call__(self, *args: Any, **kwargs: Any) -> list[str]:
        self.threads.append(threading.current_thread().name)
        return super().__call__(*args, **kwargs)


class AsyncFirstLM(DummyLM):
    """Overrides ``acall`` below ``__call__``: the async path is the intended one."""

    async def acall(self, *args: Any, **kwargs: Any) -> list[str]:
        return self.__call__(*args, **kwargs)


class Pipeline(dspex.Module):
    def __init__(self, lm: Any = None) -> None:
        super().__init__()
        self.step = dspex.Predict("question -> answer")
        self.step.lm = lm

    def forward(self, question: str) -> Any:
        return self.step(question=question)


def test_plain_predict_and_lm_classes() -> None:
    plain = dspex.Predict("question -> answer")
    assert customized_sync_lm(plain) is False
    plain.lm = DummyLM()
    assert customized_sync_lm(plain) is False
    plain.lm = AsyncFirstLM()
    assert customized_sync_lm(plain) is False
    plain.lm = CountingLM()
    assert customized_sync_lm(plain) is True
    plain.lm = None
    with dspex.context(lm=CountingLM()):
        assert customized_sync_lm(plain) is True  # the configured LM counts too
    with dspex.context(lm=DummyLM()):
        assert customized_sync_lm(plain) is False


def test_predict_holding_modules_takes_the_full_walk() -> None:
    inner = dspex.Predict("question -> answer")
    inner.lm = CountingLM()
    outer = dspex.Predict("question -> answer")
    outer.helper = inner  # a sub-predictor as an attribute
    assert customized_sync_lm(outer) is True
    listed = dspex.Predict("question -> answer")
    listed.helpers = [dspex.Predict("question -> answer"), inner]  # ... or inside a list
    assert customized_sync_lm(listed) is True
    keyed = dspex.Predict("question -> answer")
    keyed.by_name = {"inner": inner}  # ... or a dict
    assert customized_sync_lm(keyed) is True
    keyed.by_name = {"inner": dspex.Predict("question -> answer")}
    assert customized_sync_lm(keyed) is False


def test_user_module_predictors() -> None:
    assert customized_sync_lm(Pipeline()) is False
    assert customized_sync_lm(Pipeline(DummyLM())) is False
    assert customized_sync_lm(Pipeline(CountingLM())) is True


def test_parallel_calls_a_predictor_lm_override_for_every_pair() -> None:
    counting = CountingLM([{"answer": f"a{i}"} for i in range(6)])
    pairs = []
    for i in range(6):
        predict = dspex.Predict("question -> answer")
        if i % 2 == 0:
            predict.lm = counting  # only some predictors use the overriding LM
        pairs.append((predict, {"question": f"q{i}"}))
    with dspex.context(lm=DummyLM([{"answer": "plain"}] * 3)):
        results = Parallel(num_threads=3, disable_progress_bar=True)(pairs)
    assert [r.answer for r in results][1::2] == ["plain"] * 3
    assert sorted(r.answer for r in results[0::2]) == ["a0", "a1", "a2"]
    assert len(counting.threads) == 3  # the override ran for each pair that uses it
