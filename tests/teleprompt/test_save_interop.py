"""Compiled programs save in DSPy's JSON format: DSPy 3.4.1 loads what DSPex compiles and
DSPex loads what DSPy compiles; both then send the same prompt."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import dspex
from dspex.teleprompt import BootstrapFewShot
from dspex.testing import LMServer
from tests.teleprompt import _oracle
from tests.teleprompt._oracle import exact, serve_oracle, trainset

dspy = pytest.importorskip("dspy")
pytestmark = pytest.mark.dspy

NUMBERS = [2, 9, 4, 7, 5, 15, 6, 8, 10]


@pytest.fixture(scope="module")
def oracle_server() -> Iterator[LMServer]:
    with LMServer() as srv:
        yield srv


def _compile(server: LMServer, lib: Any, optimizer: Any) -> Any:
    serve_oracle(server)
    lm = lib.LM("openai/test", api_base=server.url, api_key="k", cache=False, num_retries=0)
    with lib.context(lm=lm):
        return optimizer.compile(_oracle.two_step(lib), trainset=trainset(lib, NUMBERS))


def _ask(server: LMServer, lib: Any, program: Any) -> tuple[Any, list[Any]]:
    serve_oracle(server)
    lm = lib.LM("openai/test", api_base=server.url, api_key="k", cache=False, num_retries=0)
    with lib.context(lm=lm):
        prediction = program(question="Is 40 even or odd?")
    return prediction.answer, [r.json["messages"] for r in server.requests]


def test_native_compiled_program_loads_in_dspy(oracle_server: LMServer, tmp_path: Path) -> None:
    ours = _compile(oracle_server, dspex, BootstrapFewShot(metric=exact, max_labeled_demos=3))
    path = tmp_path / "native.json"
    ours.save(path)
    loaded = _oracle.two_step(dspy)
    loaded.load(str(path))
    assert len(loaded.answer.predict.demos) == len(ours.answer.predict.demos) > 0
    assert _ask(oracle_server, dspy, loaded) == _ask(oracle_server, dspex, ours)


def test_dspy_compiled_program_loads_natively(oracle_server: LMServer, tmp_path: Path) -> None:
    theirs = _compile(oracle_server, dspy, dspy.BootstrapFewShot(metric=exact, max_labeled_demos=3))
    path = tmp_path / "dspy.json"
    theirs.save(str(path))
    loaded = _oracle.two_step(dspex).load(path)
    saved = json.loads(path.read_text())
    assert [d["question"] for d in saved["draft"]["demos"]] == [
        d["question"] for d in loaded.draft.demos
    ]
    assert _ask(oracle_server, dspex, loaded) == _ask(oracle_server, dspy, theirs)
