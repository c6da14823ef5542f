"""Text that modules feed back to the LM about a failure (ReAct observations, PoT retries)."""

from __future__ import annotations

import traceback

__all__ = ["format_error_for_lm"]


def format_error_for_lm(error: BaseException, *, traceback_frames: int = 0) -> str:
    """``str(error)``; with ``traceback_frames > 0``, a newline then the traceback limited to
    that many frames (DSPy's ``format_error_for_lm``: the same text for the same frames)."""
    if traceback_frames <= 0:
        return str(error)
    lines = traceback.format_exception(
        type(error), error, error.__traceback__, limit=traceback_frames
    )
    return "\n" + "".join(lines).strip()
