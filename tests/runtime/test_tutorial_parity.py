"""A DSPy-tutorial-shaped program runs identically under ``import dspy`` and
``import dspex as dspy`` against one ``LMServer``: same request bytes, same outputs.

The program: a custom Module with two predictors (ChainOfThought, then Predict with a pydantic
output type); it is called, batched, its history printed, its usage tracked and its output
streamed. Each side talks to its own path on the server, so every recorded request belongs to
one side; the server answers from the prompt alone, so equal prompts get equal answers.
"""

from __future__ import annotations

import asyncio
import io
import re
from types import ModuleType
from typing import Any

import pydantic
import pytest

import dspex
from dspex.testing import LMServer
from tests.bridge.test_parity import raw_messages

dspy = pytest.importorskip("dspy")
pytestmark = pytest.mark.dspy


class Answer(pydantic.BaseModel):
    text: str
    confidence: float


def build(d: ModuleType) -> Any:
    """The same source, for either library (``d`` is ``dspy`` or ``dspex``)."""

    class Outline(d.Signature):  # type: ignore[name-defined,misc]
        """Outline the key points needed to answer the question."""

        question: str = d.InputField()
        points: list[str] = d.OutputField(desc="short key points")

    class Respond(d.Signature):  # type: ignore[name-defined,misc]
        """Answer the question from the key points."""

        question: str = d.InputField()
        points: list[str] = d.InputField()
        answer: Answer = d.OutputField()

    class Program(d.Module):  # type: ignore[name-defined,misc]
        def __init__(self) -> None:
            super().__init__()
            self.outline = d.ChainOfThought(Outline)
            self.respond = d.Predict(Respond)

        def forward(self, question: str) -> Any:
            points = self.outline(question=question).points
            return self.respond(question=question, points=points)

    return Program()


def _outputs(pred: Any) -> dict[str, Any]:
    return {
        k: (v.model_dump() if isinstance(v, pydantic.BaseModel) else v) for k, v in pred.items()
    }


def _requests(server: LMServer, path: str) -> list[str]:
    return [raw_messages(r.body) for r in server.requests if r.path.startswith(f"/v1{path}/")]


def _history_text(program: Any) -> str:
    out = io.StringIO()
    program.inspect_history(n=2, file=out)
    return re.sub(r"^\[.*\]$", "[timestamp]", out.getvalue(), flags=re.M)


def run_side(d: ModuleType, server: LMServer, side: str) -> dict[str, Any]:
    lm = d.LM("openai/test", api_base=f"{server.url}/{side}", api_key="test", cache=False)
    program = build(d)
    got: dict[str, Any] = {}
    with d.context(lm=lm, track_usage=True):
        pred = program(question="Why is the sky blue?")
        got["call"] = _outputs(pred)
        usage = pred.get_lm_usage()["openai/test"]
        got["usage"] = {k: usage[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
        got["history"] = _history_text(program)
        examples = [d.Example(question=f"question {i}").with_inputs("question") for i in range(4)]
        got["batch"] = [_outputs(p) for p in program.batch(examples, num_threads=2)]
        stream = d.streamify(
            program, stream_listeners=[d.streaming.StreamListener(signature_field_name="reasoning")]
        )

        async def consume() -> tuple[str, dict[str, Any]]:
            text, final = "", None
            async for item in stream(question="What makes rain?"):
                if isinstance(item, d.Prediction):
                    final = _outputs(item)
                elif isinstance(item, d.streaming.StreamResponse):
                    assert item.signature_field_name == "reasoning"
                    assert item.predict_name == "outline.predict"
                    text += item.chunk
            assert final is not None
            return text, final

        got["stream_text"], got["stream_final"] = asyncio.run(consume())
    return got


def test_tutorial_program_is_identical_under_dspy_and_dspex(server: LMServer) -> None:
    server.clear()
    ours = run_side(dspex, server, "dspex")
    theirs = run_side(dspy, server, "dspy")
    assert ours["call"] == theirs["call"]
    assert ours["usage"] == theirs["usage"]
    assert ours["history"] == theirs["history"]
    assert ours["batch"] == theirs["batch"]
    assert ours["stream_final"] == theirs["stream_final"]
    assert ours["stream_text"] == theirs["stream_text"] and ours["stream_text"]
    # the same request bytes, in the same order for the sequential calls, as sets for the batch
    mine, other = _requests(server, "/dspex"), _requests(server, "/dspy")
    assert len(mine) == len(other) == 2 + 8 + 2
    assert mine[:2] == other[:2] and mine[-2:] == other[-2:]
    assert sorted(mine[2:10]) == sorted(other[2:10])
