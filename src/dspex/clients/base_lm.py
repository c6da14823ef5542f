"""DSPy's ``dspy.clients.base_lm`` path: ``BaseLM``, the state's class marker and the
process-wide LM history."""

from dspex.lm.base import LM_CLASS_STATE_KEY, BaseLM
from dspex.utils.inspect_history import GLOBAL_HISTORY, inspect_history

__all__ = ["GLOBAL_HISTORY", "LM_CLASS_STATE_KEY", "BaseLM", "inspect_history"]
