"""DSPy's ``dspy.predict.aggregation`` path: the native :mod:`dspex.modules.aggregation`."""

from dspex.modules.aggregation import *  # noqa: F403
from dspex.modules.aggregation import __all__ as __all__
