"""Typed errors -> HTTP status, headers and a JSON body: the one mapping the server uses.

==============================================  ======  ===========
error                                           status  Retry-After
==============================================  ======  ===========
invalid inputs (pydantic), CallError, StateError,
SignatureError, PipelineSpecError, step input/
validation errors, other UserError               422
SecurityError (class outside the allow-list,
a sandbox refusing the code)                    403
ProgramNotFound                                 404
ServerSaturated (slots and queue full)          429     yes
ServerDraining, pool saturated/unhealthy/
closed, QueueTimeout, LM rate limit, circuit
open, no sandbox available                      503     yes
LMError, AdapterParseError, a crashed worker    502
RequestDeadlineExceeded, LM/step/execution/
sandbox timeouts                                504
ConfigurationError (the server's own setup),
RemoteError, anything else                      500
==============================================  ======  ===========

A ``PipelineError`` wrapping a step's failure maps as its cause does.
"""

from __future__ import annotations

import math
from typing import Any

from dspex.errors import (
    AdapterParseError,
    CircuitOpenError,
    ConfigurationError,
    DSPexError,
    ExecutionTimeout,
    LMError,
    LMRateLimitError,
    LMTimeoutError,
    PipelineError,
    PoolClosed,
    PoolError,
    PoolSaturated,
    PoolUnhealthy,
    ProgramNotFound,
    QueueTimeout,
    RequestDeadlineExceeded,
    SandboxTimeout,
    SandboxUnavailable,
    SecurityError,
    ServerDraining,
    ServerSaturated,
    StepInputMissing,
    StepTimeout,
    StepValidationError,
    UserError,
)

__all__ = ["error_body", "status_for"]

_TABLE: tuple[tuple[type[BaseException], int], ...] = (
    (ServerSaturated, 429),
    (ServerDraining, 503),
    (RequestDeadlineExceeded, 504),
    (ProgramNotFound, 404),
    (SandboxTimeout, 504),
    (SandboxUnavailable, 503),
    (SecurityError, 403),
    (ConfigurationError, 500),
    (StepInputMissing, 422),
    (StepValidationError, 422),
    (StepTimeout, 504),
    (UserError, 422),
    (LMTimeoutError, 504),
    (LMRateLimitError, 503),
    (CircuitOpenError, 503),
    (LMError, 502),
    (AdapterParseError, 502),
    (ExecutionTimeout, 504),
    (PoolSaturated, 503),
    (QueueTimeout, 503),
    (PoolUnhealthy, 503),
    (PoolClosed, 503),
    (PoolError, 502),
)
_RETRY = frozenset({429, 503})


def _root(exc: BaseException) -> BaseException:
    """The step failure a pipeline error carries, if any."""
    seen = 0
    while isinstance(exc, PipelineError) and not isinstance(
        exc, StepInputMissing | StepValidationError | StepTimeout
    ):
        cause = getattr(exc, "cause", None)
        if not isinstance(cause, BaseException) or seen > 8:
            break
        exc, seen = cause, seen + 1
    return exc


def status_for(exc: BaseException) -> tuple[int, dict[str, str]]:
    """The HTTP status and extra headers for ``exc``."""
    root = _root(exc)
    status = next((code for cls, code in _TABLE if isinstance(root, cls)), 500)
    headers: dict[str, str] = {}
    if status in _RETRY:
        retry_after = getattr(root, "retry_after", None)
        seconds = retry_after if isinstance(retry_after, int | float) and retry_after > 0 else 1
        headers["Retry-After"] = str(math.ceil(seconds))
    return status, headers


def error_body(exc: BaseException, status: int, program: str | None = None) -> dict[str, Any]:
    """``{"error": {"type", "message", "status", ...}}`` for ``exc``."""
    root = _root(exc)
    message = str(exc) if status < 500 or isinstance(exc, DSPexError) else "internal error"
    error: dict[str, Any] = {"type": type(root).__name__, "message": message, "status": status}
    if program is not None:
        error["program"] = program
    if root is not exc:
        error["wrapped_by"] = type(exc).__name__
        step = getattr(exc, "step", None)
        if step is not None:
            error["step"] = step
    retry_after = getattr(root, "retry_after", None)
    if isinstance(retry_after, int | float):
        error["retry_after"] = retry_after
    return {"error": error}
