"""DSPy's ``dspy.utils.exceptions`` names, as aliases into DSPex's one error tree, and
``format_error_for_lm``."""

from __future__ import annotations

import traceback

from dspex.errors import (
    AdapterParseError,
    ContextWindowExceededError,
    DSPyError,
    LMAuthError,
    LMBillingError,
    LMCollectionLimitError,
    LMConfigurationError,
    LMError,
    LMInvalidRequestError,
    LMLockTimeoutError,
    LMNotConfiguredError,
    LMProviderError,
    LMRateLimitError,
    LMServerError,
    LMStreamAssemblyError,
    LMTimeoutError,
    LMTransportError,
    LMUnexpectedError,
    LMUnsupportedFeatureError,
    LMUnsupportedModelError,
    is_retryable_lm_error,
)

__all__ = [
    "AdapterParseError",
    "ContextWindowExceededError",
    "DSPyError",
    "LMAuthError",
    "LMBillingError",
    "LMCollectionLimitError",
    "LMConfigurationError",
    "LMError",
    "LMInvalidRequestError",
    "LMLockTimeoutError",
    "LMNotConfiguredError",
    "LMProviderError",
    "LMRateLimitError",
    "LMServerError",
    "LMStreamAssemblyError",
    "LMTimeoutError",
    "LMTransportError",
    "LMUnexpectedError",
    "LMUnsupportedFeatureError",
    "LMUnsupportedModelError",
    "format_error_for_lm",
    "is_retryable_lm_error",
]


def format_error_for_lm(error: BaseException, *, traceback_frames: int = 0) -> str:
    """An error as text to show an LM (tools and code that failed): ``str(error)``, or with
    ``traceback_frames > 0`` a newline and the traceback limited to that many frames."""
    if traceback_frames <= 0:
        return str(error)
    lines = traceback.format_exception(error, limit=traceback_frames)
    return "\n" + "".join(lines).strip()
