"""Native ``Flex`` (DSPy 3.4.1's ``dspy.Flex``): a module whose implementation is optimizable
code, run in an interpreter with its predictors on the host. See :mod:`dspex.modules.flex.flex`."""

from dspex.modules.flex.context import FlexContext
from dspex.modules.flex.flex import Flex

__all__ = ["Flex", "FlexContext"]
