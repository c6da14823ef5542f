"""DSPy's ``dspy.utils.usage_tracker``: the tracker LM calls record their token usage into."""

from __future__ import annotations

from dspex.lm.usage import UsageTracker, track_usage

__all__ = ["UsageTracker", "track_usage"]
