"""DSPy's ``dspy.utils.exceptions`` names, as aliases into DSPex's one error tree."""

from __future__ import annotations

from dspex.errors import AdapterParseError, ContextWindowExceeded

ContextWindowExceededError = ContextWindowExceeded

__all__ = ["AdapterParseError", "ContextWindowExceededError"]
