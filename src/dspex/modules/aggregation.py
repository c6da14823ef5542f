"""``majority``: the most common value of a field across completions (DSPy's rules)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dspex.evaluate.metrics import normalize_text
from dspex.primitives.prediction import Completions, Prediction

__all__ = ["default_normalize", "majority"]


def default_normalize(s: str) -> str | None:
    """:func:`~dspex.evaluate.metrics.normalize_text`, with empty results ignored (``None``)."""
    return normalize_text(s) or None


def majority(
    prediction_or_completions: Prediction | Completions | list[Any],
    normalize: Callable[[Any], Any] | None = default_normalize,
    field: str | None = None,
) -> Prediction:
    """The first completion whose (normalized) ``field`` value is the most common.

    ``field`` defaults to the signature's last output field (or the completions' last key).
    Values that normalize to ``None`` are ignored unless all do; ties go to the earliest.
    """
    if not isinstance(prediction_or_completions, Prediction | Completions | list):
        raise TypeError(
            "majority() takes a Prediction, Completions or a list of completions, got "
            f"{type(prediction_or_completions).__name__}"
        )
    completions: Any = (
        prediction_or_completions.completions
        if isinstance(prediction_or_completions, Prediction)
        else prediction_or_completions
    )
    signature = getattr(completions, "signature", None)
    if not field:
        keys = list(signature.output_fields) if signature else list(completions[0].keys())
        field = keys[-1]
    norm: Callable[[Any], Any] = normalize if normalize else (lambda x: x)
    values = [norm(c[field]) for c in completions]
    counts: dict[Any, int] = {}
    for value in [v for v in values if v is not None] or values:
        counts[value] = counts.get(value, 0) + 1
    winner = max(counts, key=lambda v: counts[v])
    chosen = next(c for c in completions if norm(c[field]) == winner)
    return Prediction.from_completions([dict(chosen)], signature=signature)
