"""DSPy's ``dspy.predict.react`` path: the native :mod:`dspex.modules.react`."""

from dspex.modules.react import *  # noqa: F403
from dspex.modules.react import __all__ as __all__
