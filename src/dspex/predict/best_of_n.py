"""DSPy's ``dspy.predict.best_of_n`` path: the native :mod:`dspex.modules.best_of_n`."""

from dspex.modules.best_of_n import *  # noqa: F403
from dspex.modules.best_of_n import __all__ as __all__
