"""DSPy's ``dspy.predict.predict`` path: the native ``Predict``."""

from dspex.modules.predict import Predict

__all__ = ["Predict"]
