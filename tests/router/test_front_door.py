"""Routing happens once, at the front door (``router.build``); engine classes never re-route.

Each misrouting case here was reproduced on the metaclass-routing design this replaced.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import dspex
from dspex import pipeline as pl
from dspex.modules import ChainOfThought as NativeCoT
from dspex.modules import Predict as NativePredict
from dspex.pool import Pool
from dspex.router import REGISTRY
from dspex.router.compare import CompareModule
from dspex.router.stats import STATS
from dspex.router.wrappers import FallbackModule, MeasuredModule, unwrap

pytestmark = pytest.mark.dspy


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    STATS.reset()
    yield
    STATS.reset()


def route_events(fn: object) -> list[dict[str, object]]:
    with dspex.telemetry.capture("dspex.router.route") as seen:
        fn()  # type: ignore[operator]
    return [meta for _, _, meta in seen.named("dspex.router.route")]


def test_native_chain_of_thought_holds_a_native_predict_whatever_predict_is_routed_to(
    tmp_path: Path, lm: dspex.LM
) -> None:
    with dspex.context(implementation_overrides={"predict": "dspy"}):
        cot = dspex.ChainOfThought("question -> answer")
        assert dspex.Predict("question -> answer").implementation == "dspy"
    assert type(cot) is NativeCoT
    assert type(cot.predict) is NativePredict
    state = cot.dump_state()
    assert set(state) == {"predict"} and state["predict"]["signature"]["fields"]
    cot.save(tmp_path / "cot.json")
    assert "reasoning" in (tmp_path / "cot.json").read_text()


def test_compare_mode_never_nests_a_compare_module_inside_another(lm: dspex.LM) -> None:
    with dspex.context(compare_sample_rate=0.5):
        cot = dspex.ChainOfThought("question -> answer")
    assert isinstance(cot, CompareModule)
    assert type(cot.primary) is NativeCoT
    assert type(cot.primary.predict) is NativePredict  # type: ignore[attr-defined]


def test_to_native_is_native_even_when_dspy_is_preferred(lm: dspex.LM) -> None:
    with dspex.context(prefer_native="dspy_first"):
        remote = dspex.Predict("question -> answer")
        assert remote.implementation == "dspy"
        native = remote.to_native()  # type: ignore[attr-defined]
    assert type(native) is NativePredict


def test_one_route_event_per_user_visible_construction(lm: dspex.LM) -> None:
    assert len(route_events(lambda: dspex.ChainOfThought("question -> answer"))) == 1
    assert len(route_events(lambda: dspex.Predict("q -> a", implementation="dspy"))) == 1
    assert len(route_events(lambda: dspex.module("chain_of_thought", "q -> a"))) == 1
    events = route_events(
        lambda: dspex.pipeline([("auto", "dspy.ChainOfThought", {"signature": "q -> a"})])
    )
    assert len(events) == 1 and events[0]["kind"] == "chain_of_thought"
    events = route_events(lambda: dspex.pipeline([pl.step(dspex.Predict, "q -> a")]))
    assert len(events) == 1 and events[0]["implementation"] == "native"


def test_creation_fallback_is_reported_in_the_one_route_event(lm: dspex.LM) -> None:
    import dspy

    events = route_events(lambda: dspex.Predict(dspy.Signature("question -> answer")))
    assert len(events) == 1
    assert events[0]["implementation"] == "dspy" and events[0]["source"] == "fallback"


def test_public_names_behave_like_classes(lm: dspex.LM) -> None:
    class MyPredict(dspex.Predict):  # type: ignore[misc]
        """A user's subclass is user code: always native."""

    mine = MyPredict("question -> answer")
    assert isinstance(mine, NativePredict) and isinstance(mine, dspex.Predict)
    assert issubclass(MyPredict, dspex.Predict)
    with dspex.context(prefer_native="dspy_first"):
        assert type(MyPredict("question -> answer")) is MyPredict
        remote = dspex.Predict("question -> answer")
    assert isinstance(remote, dspex.Predict) and not isinstance(remote, dspex.ChainOfThought)
    assert dspex.Predict.__name__ == "Predict"
    assert dspex.Predict.dump_state is NativePredict.dump_state
    original = NativePredict.forward
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dspex.Predict, "forward", lambda self, **kw: dspex.Prediction(answer="p"))
        assert NativePredict("q -> a")(q="x").answer == "p"
    assert NativePredict.forward is original
    from unittest import mock

    with mock.patch.object(dspex.Predict, "forward", lambda self, **kw: dspex.Prediction(a="m")):
        assert NativePredict("q -> a")(q="x").a == "m"
    assert NativePredict.forward is original


def test_performance_measurement_is_a_wrapper_not_a_flag(lm: dspex.LM) -> None:
    with dspex.context(routing_strategy="performance"):
        module = dspex.Predict("question -> answer")
    assert isinstance(module, MeasuredModule) and type(unwrap(module)) is NativePredict
    assert not hasattr(NativePredict("q -> a"), "_dspex_measure")
    module(question="q")
    assert STATS.snapshot()["predict/native"]["calls"] == 1
    module.demos = [dspex.Example(question="a", answer="b")]  # reaches the inner module
    assert unwrap(module).demos == module.demos
    assert module.dump_state() == unwrap(module).dump_state()


def test_call_time_fallback_is_a_wrapper_around_the_dspy_module(lm: dspex.LM) -> None:
    broken = Pool(
        target="dspex.bridge.host:make_host", size=1, python="/bin/false", startup_timeout=5
    )
    session = dspex.DSPySession(pool=broken)
    module = dspex.Predict("question -> answer", implementation="dspy", session=session)
    assert isinstance(module, FallbackModule) and module.implementation == "dspy"
    with dspex.telemetry.capture("dspex.router.fallback") as seen:
        assert module(question="q").answer
    assert len(seen.events) == 1
    assert module(question="again").answer  # the native stand-in is kept
    assert len(seen.events) == 1
    broken.close_sync(cancel=True)


def test_a_user_module_sent_to_dspy_is_a_typed_error_not_an_attribute_error(
    lm: dspex.LM,
) -> None:
    class QA(dspex.Module):
        def __init__(self) -> None:
            super().__init__()
            self.answer = dspex.Predict("question -> answer")

        def forward(self, question: str) -> dspex.Prediction:
            return self.answer(question=question)

    with pytest.raises(dspex.UserError, match="QA is a native module"):
        best = dspex.dspy("dspy.BestOfN", QA(), N=2, reward_fn=lambda a, p: 1.0, threshold=1.0)
        best(question="q")


def test_registry_is_the_one_mapping(lm: dspex.LM) -> None:
    entry = REGISTRY.entry("chain_of_thought")
    assert entry.added_outputs == ("reasoning",)
    assert REGISTRY.by_dspy_type("dspy.predict.chain_of_thought.ChainOfThought") is entry
    assert REGISTRY.kind_of(NativeCoT("q -> a")) == "chain_of_thought"
    assert REGISTRY.kind_of(NativePredict) == "predict"


def test_predictors_record_the_trace_in_force(lm: dspex.LM) -> None:
    qa = dspex.Predict("question -> answer")
    qa(question="outside")  # no trace: nothing is kept anywhere
    with dspex.context(trace=[]) as scoped:
        pred = qa(question="inside")
        qa(question="skipped", _trace=False)
    assert scoped.trace is not None and len(scoped.trace) == 1
    predictor, inputs, recorded = scoped.trace[0]
    assert predictor is qa and inputs == {"question": "inside"} and recorded is pred
    with dspex.context(trace=[], max_trace_size=2) as small:
        for i in range(5):
            qa(question=str(i))
    assert small.trace is not None
    assert [entry[1]["question"] for entry in small.trace] == ["3", "4"]
    with pytest.raises(dspex.ConfigurationError):
        dspex.configure(trace="yes")
