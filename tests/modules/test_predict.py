"""Native Predict / ChainOfThought against the real local LM server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Literal

import pytest

import dspex
from dspex.errors import CallError, ConfigurationError
from dspex.testing import LMServer


@pytest.fixture
def server() -> Iterator[LMServer]:
    with LMServer() as srv:
        yield srv


@pytest.fixture
def lm(server: LMServer) -> dspex.LM:
    return dspex.LM("openai/test-model", api_base=server.url, api_key="k", cache=False)


def test_predict_returns_typed_outputs(lm: dspex.LM) -> None:
    sig = dspex.Signature(
        "question -> answer: str, score: int, confidence: float, ok: bool, tags: list[str]"
    )
    pred = dspex.Predict(sig, lm=None)(question="What is 2+2?", lm=lm)
    assert isinstance(pred.answer, str)
    assert isinstance(pred.score, int) and isinstance(pred.confidence, float)
    assert isinstance(pred.ok, bool) and isinstance(pred.tags, list)
    assert pred.completions is not None and len(pred.completions) == 1


def test_scripted_reply_is_parsed(server: LMServer, lm: dspex.LM) -> None:
    server.reply({"answer": "Paris"})
    dspex.configure(lm=lm)
    pred = dspex.Predict("question -> answer")(question="Capital of France?")
    assert pred.answer == "Paris"
    messages = server.requests[-1].json["messages"]
    assert messages[0]["role"] == "system" and "[[ ## answer ## ]]" in messages[0]["content"]
    assert "Capital of France?" in messages[-1]["content"]


def test_n_choices_become_completions(lm: dspex.LM) -> None:
    pred = dspex.Predict("question -> answer", n=3)(question="q", lm=lm)
    assert pred.completions is not None and len(pred.completions) == 3
    assert len(pred.completions.answer) == 3


def test_demos_are_sent_and_state_round_trips(tmp_path, server: LMServer, lm: dspex.LM) -> None:  # type: ignore[no-untyped-def]
    qa = dspex.Predict("question -> answer")
    qa.demos = [dspex.Example(question="1+1?", answer="2")]
    qa(question="2+2?", lm=lm)
    sent = server.requests[-1].json["messages"]
    assert any("1+1?" in m["content"] for m in sent)
    path = tmp_path / "qa.json"
    qa.save(path)
    again = dspex.Predict("question -> answer")
    again.load(path)
    assert again.demos == [{"question": "1+1?", "answer": "2"}]  # dicts, as DSPy loads them
    again(question="3+3?", lm=lm)  # demos loaded as dicts are sent as Examples are
    assert server.requests[-1].json["messages"][:-1] == sent[:-1]


def test_context_and_call_overrides_pick_the_lm(server: LMServer) -> None:
    a = dspex.LM("openai/model-a", api_base=server.url, api_key="k", cache=False)
    b = dspex.LM("openai/model-b", api_base=server.url, api_key="k", cache=False)
    qa = dspex.Predict("question -> answer")
    dspex.configure(lm=a)
    qa(question="x")
    with dspex.context(lm=b):
        qa(question="x")
    qa(question="x", lm=b)
    assert [r.json["model"] for r in server.requests] == ["model-a", "model-b", "model-b"]


def test_chain_of_thought_adds_reasoning(lm: dspex.LM) -> None:
    class QA(dspex.Signature):
        """Answer questions."""

        question: str = dspex.InputField(desc="a trivia question")
        answer: Literal["yes", "no"] = dspex.OutputField()

    cot = dspex.ChainOfThought(QA)
    assert list(cot.predict.signature.output_fields) == ["reasoning", "answer"]
    pred = cot(question="Is water wet?", lm=lm)
    assert isinstance(pred.reasoning, str) and pred.answer in ("yes", "no")
    assert cot.implementation == "native"


async def test_async_and_sync_agree_and_run_concurrently(lm: dspex.LM) -> None:
    qa = dspex.Predict("question -> answer: int")
    preds = await asyncio.gather(*(qa.acall(question=f"q{i}", lm=lm) for i in range(20)))
    assert all(isinstance(p.answer, int) for p in preds)
    again = await qa.acall(question="q3", lm=lm)
    assert again.answer == preds[3].answer


def test_usage_errors_are_typed() -> None:
    qa = dspex.Predict("question -> answer")
    with pytest.raises(ConfigurationError, match="No LM is configured"):
        qa(question="x")
    with pytest.raises(CallError, match="Positional arguments"):
        qa("x")
    with pytest.raises(ConfigurationError, match="BaseLM"):
        qa(question="x", lm="openai/gpt-4o-mini")
    with pytest.raises(CallError, match="config"):
        qa(question="x", config="hot", lm=dspex.testing.DummyLM([]))


# ---------------------------------------------------------------- the adapter flow's life
class _SpyAdapter(dspex.ChatAdapter):
    """Records the ``lm`` each flow is given and whether the flow was closed."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[object] = []
        self.closed = 0

    def flow(self, lm_kwargs, signature, demos, inputs, lm=None):  # type: ignore[no-untyped-def,override]
        self.seen.append(lm)
        try:
            return (yield from super().flow(lm_kwargs, signature, demos, inputs, lm))
        finally:
            self.closed += 1


class _FailingLM(dspex.BaseLM):
    def __init__(self) -> None:
        super().__init__("failing/model")

    async def acall(self, prompt=None, messages=None, **kwargs):  # type: ignore[no-untyped-def,override]
        raise dspex.errors.LMServerError("down")

    def __call__(self, prompt=None, messages=None, **kwargs):  # type: ignore[no-untyped-def,override]
        raise dspex.errors.LMServerError("down")


def test_predict_gives_the_adapter_its_lm_and_closes_the_flow_when_the_lm_raises(
    lm: dspex.LM,
) -> None:
    adapter = _SpyAdapter()
    with dspex.context(adapter=adapter):
        dspex.Predict("question -> answer")(question="q", lm=lm)
        assert adapter.seen == [lm] and adapter.closed == 1
        failing = _FailingLM()
        with pytest.raises(dspex.errors.LMServerError):
            dspex.Predict("question -> answer")(question="q", lm=failing)
        assert adapter.seen[-1] is failing and adapter.closed == 2  # closed at once, not by GC
        with pytest.raises(dspex.errors.LMServerError):
            asyncio.run(dspex.Predict("question -> answer").acall(question="q", lm=failing))
        assert adapter.closed == 3


# ---------------------------------------------------------------- saved LM state
def _state_with_lm(**lm_state: object) -> dict[str, object]:
    state = dspex.Predict("question -> answer").dump_state()
    state["lm"] = {"model": "openai/gpt-4o-mini", **lm_state}
    return state


def test_saved_lm_endpoints_are_dropped_with_dspys_warning_unless_trusted(
    tmp_path, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    state = _state_with_lm(api_base="http://evil.example/v1")
    with caplog.at_level("WARNING"):
        loaded = dspex.Predict("question -> answer").load_state(state)
    assert "Ignoring unsafe LM config key(s) during state load: ['api_base']" in caplog.text
    assert (
        isinstance(loaded.lm, dspex.LM) and loaded.lm.endpoint.api_base != "http://evil.example/v1"
    )
    trusted = dspex.Predict("question -> answer").load_state(state, allow_unsafe_lm_state=True)
    assert isinstance(trusted.lm, dspex.LM)
    assert trusted.lm.endpoint.api_base == "http://evil.example/v1"
    # Module.load passes the opt-in down to each predictor
    path = tmp_path / "p.json"
    import orjson

    path.write_bytes(orjson.dumps(state))
    assert dspex.Predict("question -> answer").load(path).lm.endpoint.api_base != (  # type: ignore[union-attr]
        "http://evil.example/v1"
    )
    again = dspex.Predict("question -> answer").load(path, allow_unsafe_lm_state=True)
    assert again.lm.endpoint.api_base == "http://evil.example/v1"  # type: ignore[union-attr]


class TrustedLM(dspex.BaseLM):
    async def acall(self, prompt=None, messages=None, **kwargs):  # type: ignore[no-untyped-def,override]
        return ["[[ ## answer ## ]]\nok"]


def test_custom_lm_classes_load_only_from_trusted_state() -> None:
    marker = f"{TrustedLM.__module__}.{TrustedLM.__qualname__}"
    state = _state_with_lm(_dspy_lm_class=marker)
    with pytest.raises(dspex.errors.StateError, match="Refusing to import"):
        dspex.Predict("question -> answer").load_state(state)
    loaded = dspex.Predict("question -> answer").load_state(state, allow_unsafe_lm_state=True)
    assert type(loaded.lm) is TrustedLM and loaded.lm.model == "openai/gpt-4o-mini"
    bad = _state_with_lm(_dspy_lm_class="collections.OrderedDict")
    with pytest.raises(dspex.errors.StateError, match="subclass of BaseLM"):
        dspex.Predict("question -> answer").load_state(bad, allow_unsafe_lm_state=True)


def test_positional_arguments_raise_dspys_error_before_callbacks() -> None:
    """Module's ``_keyword_only`` check: DSPy's message, sync and async, no callback fired."""
    dspy = pytest.importorskip("dspy")
    from dspex.utils.callback import BaseCallback

    events: list[str] = []

    class Recorder(BaseCallback):
        def on_module_start(
            self, call_id: str, instance: object, inputs: dict[str, object]
        ) -> None:
            events.append("start")

    ours = dspex.Predict("question -> answer", callbacks=[Recorder()])
    with pytest.raises(ValueError) as theirs:
        dspy.Predict("question -> answer")("q")
    with pytest.raises(CallError) as sync_error:
        ours("q")
    with pytest.raises(CallError) as async_error:
        asyncio.run(ours.acall("q"))
    assert str(sync_error.value) == str(async_error.value) == str(theirs.value)
    assert events == []
