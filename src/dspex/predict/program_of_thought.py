"""DSPy's ``dspy.predict.program_of_thought`` path: the native :mod:`dspex.modules.program_of_thought`."""

from dspex.modules.program_of_thought import *  # noqa: F403
from dspex.modules.program_of_thought import __all__ as __all__
