"""LM-judged metrics: ``SemanticF1`` and ``CompleteAndGrounded`` (native modules).

The judge signatures carry DSPy 3.4.1's instructions and field descriptions word for word, so
the prompts sent to the judge LM are the same as DSPy's (checked by the parity tests).
"""

from __future__ import annotations

import asyncio
from typing import Any

from dspex.modules.chain_of_thought import ChainOfThought
from dspex.primitives.module import Module
from dspex.primitives.prediction import Prediction
from dspex.signatures import InputField, OutputField, Signature

__all__ = [
    "AnswerCompleteness",
    "AnswerGroundedness",
    "CompleteAndGrounded",
    "DecompositionalSemanticRecallPrecision",
    "SemanticF1",
    "SemanticRecallPrecision",
    "f1_score",
]

_RECALL = "fraction (out of 1.0) of ground truth covered by the system response"
_PRECISION = "fraction (out of 1.0) of system response covered by the ground truth"
_GT_IDEAS = "enumeration of key ideas in the ground truth"
_SR_IDEAS = "enumeration of key ideas in the system response"
_DISCUSSION = "discussion of the overlap between ground truth and system response"


class SemanticRecallPrecision(Signature):
    """
    Compare a system's response to the ground truth to compute its recall and precision.
    If asked to reason, enumerate key ideas in each response, and whether they are present in the other response.
    """

    question: str = InputField()
    ground_truth: str = InputField()
    system_response: str = InputField()
    recall: float = OutputField(desc=_RECALL)
    precision: float = OutputField(desc=_PRECISION)


class DecompositionalSemanticRecallPrecision(Signature):
    """
    Compare a system's response to the ground truth to compute recall and precision of key ideas.
    You will first enumerate key ideas in each response, discuss their overlap, and then report recall and precision.
    """

    question: str = InputField()
    ground_truth: str = InputField()
    system_response: str = InputField()
    ground_truth_key_ideas: str = OutputField(desc=_GT_IDEAS)
    system_response_key_ideas: str = OutputField(desc=_SR_IDEAS)
    discussion: str = OutputField(desc=_DISCUSSION)
    recall: float = OutputField(desc=_RECALL)
    precision: float = OutputField(desc=_PRECISION)


class AnswerCompleteness(Signature):
    """
    Estimate the completeness of a system's responses, against the ground truth.
    You will first enumerate key ideas in each response, discuss their overlap, and then report completeness.
    """

    question: str = InputField()
    ground_truth: str = InputField()
    system_response: str = InputField()
    ground_truth_key_ideas: str = OutputField(desc=_GT_IDEAS)
    system_response_key_ideas: str = OutputField(desc=_SR_IDEAS)
    discussion: str = OutputField(desc=_DISCUSSION)
    completeness: float = OutputField(desc=_RECALL)


class AnswerGroundedness(Signature):
    """
    Estimate the groundedness of a system's responses, against real retrieved documents written by people.
    You will first enumerate whatever non-trivial or check-worthy claims are made in the system response, and then
    discuss the extent to which some or all of them can be deduced from the retrieved context and basic commonsense.
    """

    question: str = InputField()
    retrieved_context: str = InputField()
    system_response: str = InputField()
    system_response_claims: str = OutputField(
        desc="enumeration of non-trivial or check-worthy claims in the system response"
    )
    discussion: str = OutputField(
        desc="discussion of how supported the claims are by the retrieved context"
    )
    groundedness: float = OutputField(
        desc="fraction (out of 1.0) of system response supported by the retrieved context"
    )


def f1_score(precision: float, recall: float) -> float:
    """Harmonic mean of precision and recall, each clamped to [0, 1]."""
    precision, recall = max(0.0, min(1.0, precision)), max(0.0, min(1.0, recall))
    return 0.0 if precision + recall == 0 else 2 * (precision * recall) / (precision + recall)


def _verdict(score: float, threshold: float, trace: Any) -> Prediction:
    # with a trace (optimizers bootstrapping) the metric is a pass/fail against the threshold
    return Prediction(score=score if trace is None else score >= threshold)


class SemanticF1(Module):
    """Semantic F1 of ``pred.response`` against ``example.response``, judged by the LM."""

    def __init__(self, threshold: float = 0.66, decompositional: bool = False) -> None:
        super().__init__()
        self.threshold = threshold
        signature = (
            DecompositionalSemanticRecallPrecision if decompositional else SemanticRecallPrecision
        )
        self.module = ChainOfThought(signature)

    async def aforward(self, example: Any, pred: Any, trace: Any = None) -> Prediction:
        scores = await self.module.acall(
            question=example.question,
            ground_truth=example.response,
            system_response=pred.response,
        )
        return _verdict(f1_score(scores.precision, scores.recall), self.threshold, trace)


class CompleteAndGrounded(Module):
    """F1 of completeness (against ``example.response``) and groundedness (against
    ``pred.context``), both judged by the LM; the two judge calls run concurrently."""

    def __init__(self, threshold: float = 0.66) -> None:
        super().__init__()
        self.threshold = threshold
        self.completeness_module = ChainOfThought(AnswerCompleteness)
        self.groundedness_module = ChainOfThought(AnswerGroundedness)

    async def aforward(self, example: Any, pred: Any, trace: Any = None) -> Prediction:
        completeness, groundedness = await asyncio.gather(
            self.completeness_module.acall(
                question=example.question,
                ground_truth=example.response,
                system_response=pred.response,
            ),
            self.groundedness_module.acall(
                question=example.question,
                retrieved_context=pred.context,
                system_response=pred.response,
            ),
        )
        score = f1_score(groundedness.groundedness, completeness.completeness)
        return _verdict(score, self.threshold, trace)
