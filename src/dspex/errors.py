"""Every exception DSPex raises, in one place.

The tree::

    DSPexError                          base of everything below
    ├── UserError                       a usage mistake by the application developer
    │   ├── ConfigurationError          bad or missing settings (no LM configured, bad pool spec...)
    │   ├── SignatureError              malformed/unsupported signature (carries position, reason)
    │   ├── ImplementationUnavailable   forced an implementation that does not exist here
    │   ├── CallError                   a module was called with arguments that do not fit it
    │   ├── StateError                  save/load state that does not fit the module
    │   └── PipelineSpecError           a pipeline or one of its steps is declared wrongly
    ├── SecurityError                   a sandbox or allow-list refused something
    ├── AdapterParseError               an LM completion did not fit the signature (carries raw text)
    ├── LMError                         a language-model call failed (provider, model, status)
    │   ├── LMAuthError                 401/403
    │   ├── LMBadRequestError           400/404/422... (non-retryable)
    │   │   └── ContextWindowExceeded   the prompt is too long for the model
    │   ├── LMRateLimitError            429 (carries retry_after)
    │   ├── LMServerError               5xx, 408, 409
    │   ├── LMTimeoutError              the call's deadline passed
    │   ├── LMTransportError            connect/read failures below HTTP
    │   ├── LMResponseTooLarge          a reply passed the LM's body/inflation cap (carries limit)
    │   └── CircuitOpenError            the endpoint's circuit breaker is open
    ├── PoolError                       the worker-pool runtime failed a call
    │   ├── PoolUnhealthy               workers crash-loop; carries the last error
    │   ├── PoolSaturated               the pool's queue is full
    │   ├── QueueTimeout                no worker became free in time
    │   ├── ExecutionTimeout            a call exceeded its hard timeout; its worker was killed
    │   ├── WorkerCrashed               the worker died during the call (pid, signal, exitcode)
    │   ├── ResourceLimitExceeded       memory/CPU/file limit hit; the worker was replaced
    │   ├── SessionLost                 the session's worker is gone and it has no recipe
    │   ├── PoolClosed                  the pool was shut down
    │   └── ProtocolError               a malformed frame or message crossed the pipe
    ├── RemoteError                     an exception raised by code inside a worker (e.g. DSPy)
    └── PipelineError                   a pipeline step failed (carries the step name)
        ├── StepInputMissing            a step's required input is absent from the state
        ├── StepValidationError         a state value does not fit a validation step's signature
        └── StepTimeout                 a step exceeded its timeout and was cancelled

Errors cross process boundaries, so every class is picklable: the structured fields are
keyword arguments kept in ``self.fields`` and restored by ``__reduce__``. The router and the
retry layers decide what to retry with one predicate, :func:`is_retryable`.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AdapterParseError",
    "CallError",
    "CircuitOpenError",
    "ConfigurationError",
    "ContextWindowExceeded",
    "DSPexError",
    "ExecutionTimeout",
    "ImplementationUnavailable",
    "LMAuthError",
    "LMBadRequestError",
    "LMError",
    "LMRateLimitError",
    "LMResponseTooLarge",
    "LMServerError",
    "LMTimeoutError",
    "LMTransportError",
    "PipelineError",
    "PipelineSpecError",
    "PoolClosed",
    "PoolError",
    "PoolSaturated",
    "PoolUnhealthy",
    "ProtocolError",
    "QueueTimeout",
    "RemoteError",
    "ResourceLimitExceeded",
    "SecurityError",
    "SessionLost",
    "SignatureError",
    "StateError",
    "StepInputMissing",
    "StepTimeout",
    "StepValidationError",
    "UserError",
    "WorkerCrashed",
    "is_retryable",
]


class DSPexError(Exception):
    """Base class of every DSPex error.

    ``message`` is the human sentence; any keyword arguments are structured fields,
    available as attributes and in ``fields`` (and preserved across pickling).
    """

    def __init__(self, message: str = "", **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fields: dict[str, Any] = fields
        for key, value in fields.items():
            setattr(self, key, value)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.fields))

    def __str__(self) -> str:
        return self.message


def _rebuild(cls: type[DSPexError], message: str, fields: dict[str, Any]) -> DSPexError:
    return cls(message, **fields)


# ---------------------------------------------------------------------------- user mistakes


class UserError(DSPexError):
    """A usage mistake by the application developer: fix the call, not the environment."""


class ConfigurationError(UserError, ValueError):
    """Settings are missing or invalid (e.g. no LM configured, an unknown pool option)."""


class SignatureError(UserError, ValueError):
    """A signature could not be parsed or uses something unsupported.

    Fields: ``source`` (the text parsed, if any), ``position`` (0-based offset or None),
    ``reason`` (short explanation).
    """

    def __init__(
        self,
        message: str = "",
        *,
        source: str | None = None,
        position: int | None = None,
        reason: str | None = None,
        **fields: Any,
    ) -> None:
        super().__init__(message, source=source, position=position, reason=reason, **fields)


class ImplementationUnavailable(UserError, LookupError):
    """The requested implementation of a module kind does not exist (names the alternatives)."""


class CallError(UserError, ValueError):
    """A module was called with arguments that do not fit it (e.g. positional inputs)."""


class StateError(UserError, ValueError):
    """Saved state does not fit the module it is loaded into, or is not valid state."""


class PipelineSpecError(UserError, ValueError):
    """A pipeline or step was declared wrongly (bad step spec, option, template, field name).

    Fields: ``step`` (the step's name, when known), ``reason``.
    """


class SecurityError(DSPexError):
    """A sandbox or allow-list refused an operation (template escape, disallowed import)."""


# ---------------------------------------------------------------------------- adapters


class AdapterParseError(DSPexError, ValueError):
    """The LM's completion could not be parsed into the signature's output fields.

    Fields: ``adapter`` (name), ``raw`` (the completion text), ``parsed`` (what was
    recovered), ``missing`` (output field names not found).
    """


# ---------------------------------------------------------------------------- LM calls


class LMError(DSPexError):
    """A language-model call failed. Fields: ``provider``, ``model``, ``status`` (or None)."""


class LMAuthError(LMError):
    """The provider rejected the credentials (401/403)."""


class LMBadRequestError(LMError, ValueError):
    """The provider rejected the request as malformed; retrying will not help."""


class ContextWindowExceeded(LMBadRequestError):
    """The prompt does not fit the model's context window."""


class LMRateLimitError(LMError):
    """429. ``retry_after`` is the number of seconds the server asked us to wait (or None)."""


class LMServerError(LMError):
    """The provider failed (5xx, 408, 409); retryable."""


class LMTimeoutError(LMError, TimeoutError):
    """The call's deadline passed (connect, first byte, or a slow body)."""


class LMTransportError(LMError, ConnectionError):
    """The connection failed below HTTP (refused, reset, DNS...)."""


class CircuitOpenError(LMError):
    """The endpoint's circuit breaker is open; calls fail fast until it half-opens."""


# ---------------------------------------------------------------------------- worker pools


class PoolError(DSPexError):
    """The worker-pool runtime could not complete a call. Field: ``pool`` (name)."""


class PoolUnhealthy(PoolError):
    """Workers keep failing to start or crash in a loop. Field: ``last_error``."""


class PoolSaturated(PoolError):
    """The pool's bounded queue is full; the call was refused at once."""


class QueueTimeout(PoolError, TimeoutError):
    """No worker became available within the queue-wait timeout."""


class ExecutionTimeout(PoolError, TimeoutError):
    """The call exceeded its hard timeout; the worker running it was killed and replaced."""


class WorkerCrashed(PoolError):
    """The worker died while running the call. Fields: ``pid``, ``signal``, ``exitcode``."""


class ResourceLimitExceeded(PoolError):
    """A worker hit a resource limit (``resource``: memory, cpu, files) and was replaced."""


class SessionLost(PoolError):
    """The worker holding a session's state is gone and the session has no rehydration recipe."""


class PoolClosed(PoolError):
    """The pool has been shut down."""


class ProtocolError(PoolError):
    """A frame or message between parent and worker was malformed."""


class RemoteError(DSPexError):
    """An exception raised by code running inside a worker.

    Fields: ``remote_type`` (qualified name of the original exception class),
    ``remote_traceback`` (formatted traceback text from the worker).
    """


# ---------------------------------------------------------------------------- pipelines


class PipelineError(DSPexError):
    """A pipeline step failed. Fields: ``step`` (name), and ``cause`` where there is one."""


class StepInputMissing(PipelineError, KeyError):
    """A step needs an input field that the pipeline state does not hold (``field``)."""

    def __str__(self) -> str:  # KeyError would repr() the message otherwise
        return self.message


class StepValidationError(PipelineError, ValueError):
    """A state value does not fit the field a validation step checks it against.

    Fields: ``step``, ``field``, ``expected`` (the type name), ``value`` (a short repr).
    """


class StepTimeout(PipelineError, TimeoutError):
    """A step exceeded its timeout and was cancelled."""


# ---------------------------------------------------------------------------- policy

_RETRYABLE: tuple[type[DSPexError], ...] = (
    LMRateLimitError,
    LMServerError,
    LMTimeoutError,
    LMTransportError,
)


def is_retryable(error: BaseException) -> bool:
    """Whether retrying the same request may succeed (the one predicate all layers use)."""
    return isinstance(error, _RETRYABLE)


# --- lm ---


class LMResponseTooLarge(LMError):
    """A reply (its body, or its body once gzip/deflate-inflated) passed the LM's size cap.

    Fields: ``provider``, ``model``, ``status``, ``limit`` (bytes). Not retryable: the same
    request would get the same reply. Raise the cap with ``LM(max_response_bytes=...)``.
    """
