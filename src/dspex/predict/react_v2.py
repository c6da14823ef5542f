"""DSPy's ``dspy.predict.react_v2`` path: the native :mod:`dspex.modules.react_v2`."""

from dspex.modules.react_v2 import *  # noqa: F403
from dspex.modules.react_v2 import __all__ as __all__
