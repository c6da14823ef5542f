"""DSPy's ``dspy.predict.knn`` path: the native :mod:`dspex.modules.knn`."""

from dspex.modules.knn import *  # noqa: F403
from dspex.modules.knn import __all__ as __all__
