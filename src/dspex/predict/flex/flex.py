"""DSPy's ``dspy.predict.flex.flex`` path: the native :class:`dspex.modules.flex.Flex`."""

from dspex.modules.flex.flex import Flex

__all__ = ["Flex"]
