"""DSPy's ``dspy.predict.flex`` path: the native :mod:`dspex.modules.flex`."""

from dspex.modules.flex import Flex

__all__ = ["Flex"]
