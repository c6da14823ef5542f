"""LabeledFewShot and Ensemble: the same compiled state as DSPy 3.4.1 in process."""

from __future__ import annotations

import json
from typing import Any

import pytest

import dspex
from dspex.errors import OptimizerError
from dspex.teleprompt import Ensemble, LabeledFewShot
from tests.teleprompt import _oracle
from tests.teleprompt._oracle import trainset

dspy = pytest.importorskip("dspy")
pytestmark = pytest.mark.dspy

NUMBERS = [2, 9, 4, 7, 5, 15, 6, 8, 10, 11, 12, 21, 13, 14, 16, 17, 18, 19, 20, 22]


def _state(program: Any) -> str:
    return json.dumps(program.dump_state(), default=repr)


@pytest.mark.parametrize("sample", [True, False])
def test_labeled_few_shot_same_demos(sample: bool) -> None:
    ours = LabeledFewShot(k=5).compile(
        _oracle.two_step(dspex), trainset=trainset(dspex, NUMBERS), sample=sample
    )
    theirs = dspy.LabeledFewShot(k=5).compile(
        _oracle.two_step(dspy), trainset=trainset(dspy, NUMBERS), sample=sample
    )
    assert _state(ours) == _state(theirs)
    assert len(ours.draft.demos) == 5


def test_labeled_few_shot_empty_trainset_returns_reset_copy() -> None:
    program = _oracle.two_step(dspex)
    program.draft.demos = [dspex.Example(question="q", draft="d")]
    compiled = LabeledFewShot().compile(program, trainset=[])
    assert compiled is not program
    assert compiled.draft.demos == []


def test_labeled_few_shot_more_k_than_examples() -> None:
    ours = LabeledFewShot(k=50).compile(_oracle.two_step(dspex), trainset=trainset(dspex, [1, 2]))
    theirs = dspy.LabeledFewShot(k=50).compile(
        _oracle.two_step(dspy), trainset=trainset(dspy, [1, 2])
    )
    assert _state(ours) == _state(theirs)
    assert len(ours.answer.predict.demos) == 2


class _Const(dspex.Module):
    def __init__(self, value: int) -> None:
        super().__init__()
        self.value = value

    def forward(self, **kwargs: Any) -> int:
        return self.value


def test_ensemble_reduces_and_samples() -> None:
    programs = [_Const(i) for i in range(6)]
    assert Ensemble().compile(programs)() == list(range(6))
    assert Ensemble(reduce_fn=sum).compile(programs)() == 15
    picked = Ensemble(size=2).compile(programs)()
    assert len(picked) == 2 and set(picked) <= set(range(6))


def test_ensemble_rejects_bad_arguments() -> None:
    with pytest.raises(OptimizerError, match="deterministic"):
        Ensemble(deterministic=True)
    with pytest.raises(AssertionError):  # DSPy asserts here; code catching that still works
        Ensemble(deterministic=True)
    with pytest.raises(OptimizerError, match="positive"):
        Ensemble(size=0)
    with pytest.raises(OptimizerError, match="larger than"):
        Ensemble(size=3).compile([_Const(1)])
