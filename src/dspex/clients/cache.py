"""DSPy's ``dspy.clients.cache`` path: ``Cache`` (the active one is ``dspex.cache``)."""

from dspex.lm.cache import Cache

__all__ = ["Cache"]
