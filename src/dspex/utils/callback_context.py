"""DSPy's module path for the active-call context variable (``dspy.utils.callback_context``)."""

from dspex.utils.callback import ACTIVE_CALL_ID

__all__ = ["ACTIVE_CALL_ID"]
