"""Native evaluation: ``Evaluate`` and DSPy's metrics (``dspex.evaluate``, as ``dspy.evaluate``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dspex._lazy import lazy_getattr

if TYPE_CHECKING:
    from dspex.evaluate.auto_evaluation import CompleteAndGrounded, SemanticF1
    from dspex.evaluate.evaluate import Evaluate, EvaluationResult
    from dspex.evaluate.metrics import (
        EM,
        F1,
        HotPotF1,
        answer_exact_match,
        answer_passage_match,
        normalize_text,
    )

__all__ = [
    "EM",
    "F1",
    "CompleteAndGrounded",
    "Evaluate",
    "EvaluationResult",
    "HotPotF1",
    "SemanticF1",
    "answer_exact_match",
    "answer_passage_match",
    "normalize_text",
]

_WHERE = {
    "CompleteAndGrounded": "dspex.evaluate.auto_evaluation",
    "EM": "dspex.evaluate.metrics",
    "Evaluate": "dspex.evaluate.evaluate",
    "EvaluationResult": "dspex.evaluate.evaluate",
    "F1": "dspex.evaluate.metrics",
    "HotPotF1": "dspex.evaluate.metrics",
    "SemanticF1": "dspex.evaluate.auto_evaluation",
    "answer_exact_match": "dspex.evaluate.metrics",
    "answer_passage_match": "dspex.evaluate.metrics",
    "normalize_text": "dspex.evaluate.metrics",
}

__getattr__ = lazy_getattr("dspex.evaluate", _WHERE, globals())
