"""DSPy's ``dspy.dsp`` layout: the ColBERTv2 client and ``dotdict``, native."""

from __future__ import annotations
