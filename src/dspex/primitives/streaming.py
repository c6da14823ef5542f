"""Items of a module's output stream: field-level text chunks, then the final ``Prediction``."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["StreamChunk"]


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """A piece of one output field's text as the LM produces it (like DSPy's StreamResponse)."""

    field: str
    """The signature output field this text belongs to."""
    chunk: str
    """The new text."""
    predictor: str | None = None
    """Name of the predictor inside the program that produced it (``None``: the module itself)."""
    is_last: bool = False
    """Whether this is the field's last chunk."""
