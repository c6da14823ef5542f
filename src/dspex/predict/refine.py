"""DSPy's ``dspy.predict.refine`` path: the native :mod:`dspex.modules.refine`."""

from dspex.modules.refine import *  # noqa: F403
from dspex.modules.refine import __all__ as __all__
