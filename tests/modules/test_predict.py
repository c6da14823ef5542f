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
    assert [d.toDict() for d in again.demos] == [{"question": "1+1?", "answer": "2"}]


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
