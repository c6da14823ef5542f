"""DSPy's ``dspy.predict.multi_chain_comparison`` path: the native :mod:`dspex.modules.multi_chain_comparison`."""

from dspex.modules.multi_chain_comparison import *  # noqa: F403
from dspex.modules.multi_chain_comparison import __all__ as __all__
