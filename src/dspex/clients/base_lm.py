"""DSPy's ``dspy.clients.base_lm`` path: ``BaseLM`` and the process-wide LM history."""

from dspex.lm.base import BaseLM
from dspex.utils.inspect_history import GLOBAL_HISTORY, inspect_history

__all__ = ["GLOBAL_HISTORY", "BaseLM", "inspect_history"]
