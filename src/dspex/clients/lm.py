"""DSPy's ``dspy.clients.lm`` path: ``LM``."""

from dspex.lm.client import LM

__all__ = ["LM"]
