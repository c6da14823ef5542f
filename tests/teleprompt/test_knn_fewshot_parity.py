"""KNNFewShot: per call, the same neighbours, bootstrapped demos and prompts as DSPy 3.4.1."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

import pytest

import dspex
from dspex.teleprompt import KNNFewShot
from dspex.testing import LMServer
from tests.teleprompt import _oracle
from tests.teleprompt._oracle import exact, serve_oracle, trainset

dspy = pytest.importorskip("dspy")
pytestmark = pytest.mark.dspy

NUMBERS = [2, 9, 4, 7, 5, 15, 6, 8, 10, 11, 12, 21]


def embed(texts: list[str]) -> list[list[float]]:
    """An angle per number: nearest neighbours are the numbers closest mod 2*pi."""
    out = []
    for text in texts:
        n = int(re.search(r"\d+", text).group(0))  # type: ignore[union-attr]
        out.append([math.cos(n), math.sin(n)])
    return out


@pytest.fixture(scope="module")
def oracle_server() -> Iterator[LMServer]:
    with LMServer() as srv:
        yield srv


def _ask(server: LMServer, lib: Any, compile_: Any, question: str) -> tuple[Any, list[Any]]:
    serve_oracle(server)
    lm = lib.LM("openai/test", api_base=server.url, api_key="k", cache=False, num_retries=0)
    with lib.context(lm=lm):
        program = compile_()
        answer = program(question=question).answer
    return answer, [r.json["messages"] for r in server.requests]


ARGS = {"max_bootstrapped_demos": 2, "max_labeled_demos": 2, "metric": exact}


@pytest.mark.parametrize("question", ["Is 3 even or odd?", "Is 40 even or odd?"])
def test_knn_few_shot_same_requests_and_answer(oracle_server: LMServer, question: str) -> None:
    """DSPy's KNNFewShot call is ``BootstrapFewShot(**args).compile(student, trainset=knn(...))``
    then the compiled call; DSPy's KNN needs numpy (not installed here), so the DSPy side runs
    exactly that on the neighbours (KNN's own parity with DSPy is tested in tests/modules)."""
    ours = KNNFewShot(3, trainset(dspex, NUMBERS), embed, num_threads=1, **ARGS)
    neighbours = [e.question for e in ours.KNN(question=question)]
    assert len(neighbours) == 3
    by_question = {e.question: e for e in trainset(dspy, NUMBERS)}

    def dspy_side() -> Any:
        student = _oracle.two_step(dspy)
        knn_trainset = [by_question[q] for q in neighbours]
        compiled = dspy.BootstrapFewShot(**ARGS).compile(student, trainset=knn_trainset)

        class Call:
            def __call__(self, **kwargs: Any) -> Any:
                return compiled(**kwargs)

        return Call()

    theirs = _ask(oracle_server, dspy, dspy_side, question)
    mine = _ask(oracle_server, dspex, lambda: ours.compile(_oracle.two_step(dspex)), question)
    assert mine == theirs
    assert len(mine[1]) > 2  # bootstrapping ran at call time, then the answer


def test_knn_few_shot_matches_dspy_class_when_numpy_is_installed(oracle_server: LMServer) -> None:
    pytest.importorskip("numpy")
    question = "Is 3 even or odd?"
    theirs = dspy.KNNFewShot(3, trainset(dspy, NUMBERS), dspy.Embedder(embed), **ARGS)
    ours = KNNFewShot(3, trainset(dspex, NUMBERS), embed, num_threads=1, **ARGS)
    assert _ask(
        oracle_server, dspex, lambda: ours.compile(_oracle.two_step(dspex)), question
    ) == _ask(oracle_server, dspy, lambda: theirs.compile(_oracle.two_step(dspy)), question)
