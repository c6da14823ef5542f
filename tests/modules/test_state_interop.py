"""A program saved by DSPy 3.4.1 loads natively (and vice versa) and predicts the same."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import dspex
from dspex.testing import LMServer

dspy = pytest.importorskip("dspy")
pytestmark = pytest.mark.dspy


def _dspy_program() -> object:
    prog = dspy.ChainOfThought("question, context: list[str] -> answer: str, confidence: float")
    prog.predict.signature = prog.predict.signature.with_instructions("Answer from the context.")
    prog.predict.demos = [
        dspy.Example(
            question="Who?", context=["Ann did it."], reasoning="Ann.", answer="Ann", confidence=0.9
        ),
        dspy.Example(question="Where?", context=["In Rome."], answer="Rome"),
    ]
    return prog


def test_dspy_saved_state_loads_natively_and_predicts_the_same(tmp_path: Path) -> None:
    path = tmp_path / "cot.json"
    _dspy_program().save(str(path))  # type: ignore[attr-defined]
    native = dspex.ChainOfThought("question, context: list[str] -> answer: str, confidence: float")
    native.load(path)
    assert native.predict.signature.instructions == "Answer from the context."
    assert len(native.predict.demos) == 2

    loaded = dspy.ChainOfThought("question, context: list[str] -> answer: str, confidence: float")
    loaded.load(str(path))
    with LMServer() as server:
        dspy_lm = dspy.LM("openai/m", api_base=server.url, api_key="k", cache=False)
        with dspy.context(lm=dspy_lm):
            expected = loaded(question="Who won?", context=["Bo won."])
        native_pred = native(
            question="Who won?",
            context=["Bo won."],
            lm=dspex.LM("openai/m", api_base=server.url, api_key="k", cache=False),
        )
        dspy_msgs, native_msgs = (r.json["messages"] for r in server.requests)
    assert native_msgs == dspy_msgs
    assert native_pred.toDict() == dict(expected.items())


def test_native_saved_state_loads_in_dspy(tmp_path: Path) -> None:
    native = dspex.ChainOfThought("question -> answer: int")
    native.predict.signature = native.predict.signature.with_instructions("Count carefully.")
    native.predict.demos = [dspex.Example(question="1+1", reasoning="add", answer=2)]
    path = tmp_path / "native.json"
    native.save(path)
    saved = json.loads(path.read_text())
    assert saved["metadata"]["dependency_versions"]["dspy"] == "3.4.1"

    prog = dspy.ChainOfThought("question -> answer: int")
    prog.load(str(path))
    assert prog.predict.signature.instructions == "Count carefully."
    assert prog.predict.demos[0]["answer"] == 2
    assert prog.dump_state()["predict"]["signature"] == saved["predict"]["signature"]
