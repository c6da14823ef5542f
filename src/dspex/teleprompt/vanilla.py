"""``LabeledFewShot``: put up to ``k`` labeled training examples in every predictor."""

from __future__ import annotations

import random
from typing import Any

from dspex.teleprompt.teleprompt import Teleprompter

__all__ = ["LabeledFewShot"]


class LabeledFewShot(Teleprompter):
    """Demos drawn from the labeled trainset (``random.Random(0)`` per compile, as DSPy)."""

    def __init__(self, k: int = 16) -> None:
        self.k = k

    def compile(self, student: Any, *, trainset: list[Any], sample: bool = True) -> Any:  # type: ignore[override]
        self.student = student.reset_copy()
        self.trainset = trainset
        if not trainset:
            return self.student
        # One generator for all predictors, drawn in predictor order: the same demos as DSPy.
        rng = random.Random(0)
        size = min(self.k, len(trainset))
        for predictor in self.student.predictors():
            predictor.demos = rng.sample(trainset, size) if sample else trainset[:size]
        return self.student
