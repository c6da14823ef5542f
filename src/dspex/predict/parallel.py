"""DSPy's ``dspy.predict.parallel`` path: the native :mod:`dspex.modules.parallel`."""

from dspex.modules.parallel import *  # noqa: F403
from dspex.modules.parallel import __all__ as __all__
