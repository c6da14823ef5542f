"""DSPy's ``dspy.experimental`` names that DSPex implements: ``Citations`` and ``Document``."""

from __future__ import annotations

from dspex.adapters.types.citation import Citations, Document

__all__ = ["Citations", "Document"]
