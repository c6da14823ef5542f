"""DSPy's module path for GEPA's Flex helpers (``dspy.teleprompt.gepa.gepa_flex_utils``):
:mod:`dspex.teleprompt.gepa.flex_utils`."""

from dspex.teleprompt import bootstrap_trace as bootstrap_trace_module
from dspex.teleprompt.gepa.flex_utils import *  # noqa: F403
from dspex.teleprompt.gepa.flex_utils import __all__ as _names

__all__ = [*_names, "bootstrap_trace_module"]
