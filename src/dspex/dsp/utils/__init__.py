"""DSPy's ``dspy.dsp.utils`` layout."""

from __future__ import annotations

from dspex.dsp.utils.utils import dotdict

__all__ = ["dotdict"]
