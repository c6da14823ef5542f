"""The router: selection policy, registry, fallback, compare mode, adaptive routing, CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

import dspex
from dspex.pool import Pool
from dspex.router import REGISTRY, choose, explain
from dspex.router.stats import MIN_SAMPLES, STATS
from dspex.settings import from_env
from dspex.testing import LMServer

pytestmark = pytest.mark.dspy


@pytest.fixture(autouse=True)
def _clean_router() -> Iterator[None]:
    STATS.reset()
    yield
    STATS.reset()
    for kind in ("predict", "react", "brand_new"):
        REGISTRY.unregister_native(kind)


# ---------------------------------------------------------------- selection policy


def test_explicit_beats_override_beats_preference() -> None:
    assert choose("predict") == "native"
    assert choose("predict", "auto") == "native"
    with dspex.context(implementation_overrides={"predict": "dspy"}):
        assert choose("predict") == "dspy"
        assert choose("predict", "native") == "native"
        assert choose("chain_of_thought") == "native"
    with dspex.context(prefer_native="dspy_first"):
        assert choose("predict") == "dspy"
        assert choose("predict", "native") == "native"
    with dspex.context(prefer_native="native_first"):
        assert choose("predict") == "native"
    with dspex.context(implementation_overrides={"predict": "auto"}, prefer_native="dspy_first"):
        assert choose("predict") == "dspy"


def test_availability_decides_single_implementation_kinds() -> None:
    assert choose("embeddings") == "dspy"
    assert choose("signature") == "native"
    with dspex.context(prefer_native="native_first"):
        assert choose("embeddings") == "dspy"


def test_forcing_a_missing_implementation_names_the_alternatives() -> None:
    with pytest.raises(dspex.ImplementationUnavailable, match="available: dspy") as info:
        choose("embeddings", "native")
    assert info.value.fields["available"] == ["dspy"]
    with pytest.raises(dspex.ImplementationUnavailable):
        choose("embeddings", "compare")
    with pytest.raises(dspex.ImplementationUnavailable, match="available: native"):
        choose("template", "dspy")
    dspex.register_native("brand_new", f"{__name__}:EchoReAct")
    with pytest.raises(dspex.ImplementationUnavailable, match="available: native"):
        choose("brand_new", "dspy")
    with pytest.raises(dspex.UserError, match="unknown module kind"):
        choose("no_such_kind")
    with pytest.raises(dspex.ConfigurationError):
        choose("predict", "fastest")


def test_settings_validate_router_options() -> None:
    with pytest.raises(dspex.ConfigurationError):
        dspex.configure(prefer_native="sometimes")
    with pytest.raises(dspex.ConfigurationError):
        dspex.configure(implementation_overrides={"predict": "python"})
    with pytest.raises(dspex.ConfigurationError):
        dspex.configure(routing_strategy="fastest")
    with pytest.raises(dspex.ConfigurationError):
        dspex.configure(compare_sample_rate=1.5)


def test_environment_variables_are_typed_and_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "DSPEX_PREFER_NATIVE": "dspy_first",
        "DSPEX_IMPLEMENTATION_OVERRIDES": "react=dspy, predict=native",
        "DSPEX_ALLOW_FALLBACK": "false",
        "DSPEX_COMPARE_SAMPLE_RATE": "0.25",
        "DSPEX_DSPY_IMPORT_ROOTS": "myapp,tools",
    }
    assert from_env(env) == {
        "prefer_native": "dspy_first",
        "implementation_overrides": {"react": "dspy", "predict": "native"},
        "allow_fallback": False,
        "compare_sample_rate": 0.25,
        "dspy_import_roots": ("myapp", "tools"),
    }
    assert from_env({"DSPEX_IMPLEMENTATION_OVERRIDES": '{"react": "dspy"}'}) == {
        "implementation_overrides": {"react": "dspy"}
    }
    for bad in (
        {"DSPEX_PREFER_NATIVE": "bogus"},
        {"DSPEX_IMPLEMENTATION_OVERRIDES": "react"},
        {"DSPEX_IMPLEMENTATION_OVERRIDES": "react=python"},
        {"DSPEX_ALLOW_FALLBACK": "maybe"},
        {"DSPEX_COMPARE_SAMPLE_RATE": "lots"},
    ):
        with pytest.raises(dspex.ConfigurationError):
            from_env(bad)
    monkeypatch.setenv("DSPEX_PREFER_NATIVE", "dspy_first")
    dspex.reset_defaults()
    assert dspex.current().prefer_native == "dspy_first"
    assert choose("predict") == "dspy"


def test_route_event_carries_the_decision() -> None:
    with dspex.telemetry.capture("dspex.router") as seen:
        choose("embeddings")
    _, _, meta = seen.named("dspex.router.route")[0]
    assert meta == {
        "operation": "create",
        "kind": "embeddings",
        "implementation": "dspy",
        "source": "availability",
        "native_available": False,
    }


# ---------------------------------------------------------------- registry


def test_registry_lists_every_kind_with_default_and_reason() -> None:
    rows = {r.kind: r for r in dspex.registry()}
    for kind in (
        "signature", "template", "validator", "metrics", "predict", "chain_of_thought",
        "react", "program_of_thought", "multi_chain_comparison", "best_of_n", "refine",
        "parallel", "evaluate", "labeled_few_shot", "bootstrap_few_shot",
        "bootstrap_few_shot_with_random_search", "knn_few_shot", "copro", "mipro_v2",
        "simba", "gepa", "retrieve", "colbert_v2", "embeddings",
    ):  # fmt: skip
        assert kind in rows
    assert rows["predict"].default == "native" and rows["predict"].dspy == "dspy.Predict"
    assert rows["embeddings"].default == "dspy" and "no native" in rows["embeddings"].reason
    assert rows["colbert_v2"].default == "native"
    assert rows["react"].default == "native" and rows["react"].native == "dspex.modules.react:ReAct"
    with dspex.context(implementation_overrides={"predict": "dspy"}):
        assert {r.kind: r for r in dspex.registry()}["predict"].default == "dspy"


class EchoReAct(dspex.Module):
    """A toy native ReAct registered at runtime."""

    def __init__(self, signature: str, tools: list[Any] | None = None) -> None:
        super().__init__()
        self.signature = dspex.Signature(signature)
        self.tools = tools or []

    def forward(self, **kwargs: Any) -> dspex.Prediction:
        return dspex.Prediction(answer=self.tools[0](kwargs["question"]))


def test_plugins_register_native_implementations_at_runtime(lm: dspex.LM) -> None:
    dspex.register_native("react", EchoReAct)
    assert choose("react") == "native"
    agent = dspex.ReAct("question -> answer", tools=[str.upper])
    assert isinstance(agent, EchoReAct) and isinstance(agent, dspex.ReAct)
    assert agent(question="hi").answer == "HI"
    remote = dspex.ReAct("question -> answer", tools=[str.upper], implementation="dspy")
    assert remote.implementation == "dspy" and isinstance(remote, dspex.ReAct)
    dspex.register_native("brand_new", f"{__name__}:EchoReAct")
    built = dspex.module("brand_new", "q -> answer", tools=[str.lower])
    assert built(question="X").answer == "x"
    with pytest.raises(dspex.ConfigurationError):
        dspex.register_native("react", "no-colon-path")


def test_dspy_names_run_programs_written_for_dspy(server: LMServer, lm: dspex.LM) -> None:
    mcc = dspex.MultiChainComparison("question -> answer", M=2, implementation="dspy")
    assert mcc.implementation == "dspy"
    pred = mcc(
        [dspex.Prediction(reasoning="a", answer="1"), dspex.Prediction(reasoning="b", answer="2")],
        question="q",
    )
    assert pred.answer


def test_registry_cli_outputs(capsys: pytest.CaptureFixture[str]) -> None:
    from dspex.router.cli import main

    assert main([]) == 0
    assert "chain_of_thought" in capsys.readouterr().out
    assert main(["--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {"kind", "native", "dspy", "default", "reason"} <= set(rows[0])
    assert main(["--markdown"]) == 0
    assert capsys.readouterr().out.startswith("| kind | native | dspy | default | reason |")
    assert main(["--bogus"]) == 2


# ---------------------------------------------------------------- fallback


def test_dspy_objects_fall_back_to_dspy_at_creation(lm: dspex.LM) -> None:
    import dspy

    class Visual(dspy.Signature):
        """Describe."""

        question: str = dspy.InputField()
        answer: str = dspy.OutputField()

    with dspex.telemetry.capture("dspex.router.fallback") as seen:
        module = dspex.Predict(Visual)
    assert module.implementation == "dspy"
    assert module(question="q").answer
    _, _, meta = seen.events[0]
    assert meta["from"] == "native" and "DSPy object" in meta["reason"]
    with pytest.raises(dspex.ImplementationUnavailable, match="DSPy object"):
        dspex.Predict(Visual, implementation="native")
    with dspex.context(allow_fallback=False), pytest.raises(dspex.ImplementationUnavailable):
        dspex.Predict(Visual)


def test_fallback_never_hides_user_errors() -> None:
    with pytest.raises(dspex.SignatureError):
        dspex.Predict("question -> -> answer")


def test_unhealthy_dspy_pool_falls_back_to_native_calls(lm: dspex.LM) -> None:
    broken = Pool(
        target="dspex.bridge.host:make_host", size=1, python="/bin/false", startup_timeout=5
    )
    session = dspex.DSPySession(pool=broken)
    remote = dspex.dspy("dspy.Predict", "question -> answer", session=session)
    with dspex.telemetry.capture("dspex.router.fallback") as seen:
        pred = remote(question="q")
    assert pred.answer
    _, _, meta = seen.events[0]
    assert meta["from"] == "dspy" and meta["to"] == "native" and "unhealthy" in meta["reason"]
    with dspex.context(allow_fallback=False):
        other = dspex.dspy("dspy.Predict", "question -> answer", session=session)
        with pytest.raises(dspex.PoolUnhealthy):
            other(question="q")
    react = dspex.dspy("dspy.ReAct", "question -> answer", tools=[str.upper], session=session)
    with pytest.raises(dspex.PoolUnhealthy):  # no native ReAct: the error stands
        react(question="q")
    broken.close_sync(cancel=True)


# ---------------------------------------------------------------- compare mode


def test_compare_mode_agrees_and_calls_the_lm_once(server: LMServer, lm: dspex.LM) -> None:
    module = dspex.ChainOfThought("question -> answer: int", implementation="compare")
    assert module.implementation == "compare"
    with dspex.telemetry.capture("dspex.router") as seen:
        pred = module(question="2+2?")
    assert isinstance(pred.answer, int)
    assert len(server.requests) == 1  # DSPy's identical prompt was answered from the recording
    report = module.last_report
    assert report is not None and not report.diverged, report
    assert "dspex.router.compare" in seen.names()
    assert "dspex.router.divergence" not in seen.names()


class TweakedPredict(dspex.Predict):
    """A native Predict with a deliberately different prompt."""

    def forward(self, **kwargs: Any) -> dspex.Prediction:
        kwargs["signature"] = self.signature.with_instructions("Answer tersely.")
        return super().forward(**kwargs)

    async def aforward(self, **kwargs: Any) -> dspex.Prediction:
        kwargs["signature"] = self.signature.with_instructions("Answer tersely.")
        return await super().aforward(**kwargs)


def test_compare_mode_catches_an_injected_divergence(
    server: LMServer, lm: dspex.LM, caplog: pytest.LogCaptureFixture
) -> None:
    dspex.register_native("predict", TweakedPredict)
    module = dspex.module("predict", "question -> answer", implementation="compare")
    with dspex.telemetry.capture("dspex.router.divergence") as seen:
        pred = module(question="q")
    assert pred.answer  # the primary (native) result is returned
    report = module.last_report
    assert report is not None and report["prompt_diverged"] and report.diverged
    assert "Answer tersely." in report["detail"]
    assert report["live_lm_calls"] == 1  # DSPy's different prompt needed its own LM call
    assert len(seen.events) == 1
    assert any("diverged" in r.message for r in caplog.records)


def test_compare_sample_rate_routes_native_kinds_through_compare(lm: dspex.LM) -> None:
    with dspex.context(compare_sample_rate=1.0):
        module = dspex.Predict("question -> answer")
        assert explain("predict")[0] == "compare"
    assert module.implementation == "compare"
    module(question="q")
    assert module.last_report is not None and not module.last_report.diverged


# ---------------------------------------------------------------- adaptive routing


def test_performance_routing_explores_then_picks_the_faster(lm: dspex.LM) -> None:
    with dspex.context(routing_strategy="performance"):
        first = dspex.Predict("question -> answer")
        assert first.implementation == "native"
        for _ in range(MIN_SAMPLES):
            first(question="q")
        assert choose("predict") == "dspy"  # not measured enough yet: explore
        for _ in range(MIN_SAMPLES):
            STATS.record("predict", "dspy", 10.0, False)
        assert choose("predict") == "native"  # measured: native was faster
        for _ in range(MIN_SAMPLES * 4):
            STATS.record("predict", "native", 0.001, True)
        assert choose("predict") == "dspy"  # native keeps failing
    assert choose("predict") == "native"  # static strategy ignores the statistics
    assert STATS.get("predict", "native").calls >= MIN_SAMPLES


def test_pipeline_steps_named_by_dspy_path_follow_the_registry(lm: dspex.LM) -> None:
    dspex.register_native("react", EchoReAct)
    pipe = dspex.pipeline(
        [("auto", "dspy.ReAct", {"signature": "question -> answer", "tools": [str.upper]})]
    )
    result = pipe.run(question="hi")
    assert result["answer"] == "HI"
    assert result.metrics()[0]["implementation"] == "native"
