"""LM-judged metrics: the same judge prompts (request bytes) and scores as DSPy's."""

from __future__ import annotations

from typing import Any

import pytest

import dspex
from dspex.evaluate import CompleteAndGrounded, SemanticF1
from dspex.testing import LMServer

dspy = pytest.importorskip("dspy")


def _bodies(server: LMServer, since: int) -> list[str]:
    return sorted(r.body.decode() for r in server.requests[since:])


def _run_both(server: LMServer, ours: Any, theirs: Any, lib_args: dict[str, Any]) -> None:
    server.clear()
    native_lm = dspex.LM("openai/test", api_base=server.url, api_key="k", cache=False)
    dspy_lm = dspy.LM("openai/test", api_base=server.url, api_key="k", cache=False)
    example = dict(question="Where is the tower?", response="In Paris, on the Champ de Mars.")
    pred = dict(response="It is in Paris.", context="The Eiffel Tower stands in Paris.")
    for trace in (None, "trace"):
        mark = len(server.requests)
        with dspex.context(lm=native_lm):
            a = ours(dspex.Example(**example), dspex.Prediction(**pred), trace=trace)
        native = [r.json["messages"] for r in server.requests[mark:]]
        mark = len(server.requests)
        with dspy.context(lm=dspy_lm):
            b = theirs(dspy.Example(**example), dspy.Prediction(**pred), trace=trace)
        other = [r.json["messages"] for r in server.requests[mark:]]
        assert sorted(map(str, native)) == sorted(map(str, other))
        assert native, "no judge request was sent"
        assert a.score == b.score


def test_semantic_f1_matches_dspy(server: LMServer) -> None:
    _run_both(server, SemanticF1(), dspy.evaluate.SemanticF1(), {})
    _run_both(
        server,
        SemanticF1(decompositional=True),
        dspy.evaluate.SemanticF1(decompositional=True),
        {},
    )


def test_complete_and_grounded_matches_dspy(server: LMServer) -> None:
    _run_both(server, CompleteAndGrounded(), dspy.evaluate.CompleteAndGrounded(), {})


def test_f1_clamps() -> None:
    from dspex.evaluate.auto_evaluation import f1_score

    assert f1_score(2.0, -1.0) == 0.0
    assert f1_score(1.0, 1.0) == 1.0
    assert f1_score(0.5, 1.0) == pytest.approx(2 / 3)
