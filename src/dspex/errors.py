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
    │   └── SandboxError                code in dspex.sandbox could not run to completion
    │       ├── SandboxUnavailable      no working isolation layer on this machine
    │       ├── SandboxTimeout          wall-clock/CPU time exceeded; the tree was killed
    │       ├── SandboxMemoryError      the memory bound was hit
    │       ├── SandboxViolation        a forbidden operation or a killed-by-limit process
    │       └── SandboxCodeError        the sandboxed code raised (session still usable)
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
    ├── PipelineError                   a pipeline step failed (carries the step name)
    │   ├── StepInputMissing            a step's required input is absent from the state
    │   ├── StepValidationError         a state value does not fit a validation step's signature
    │   └── StepTimeout                 a step exceeded its timeout and was cancelled
    └── ServerError                     ``dspex serve`` refused or cut short a request
        ├── ServerSaturated             every call slot and queue place is taken (retry_after)
        ├── ServerDraining              the server is shutting down
        ├── RequestDeadlineExceeded     a request ran past its deadline
        └── ProgramNotFound             no program is served under that name

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
    "ContextWindowExceededError",
    "CustomTypeError",
    "CustomTypeUsageError",
    "DSPexError",
    "DSPyError",
    "ExecutionTimeout",
    "ImplementationUnavailable",
    "LMAuthError",
    "LMBadRequestError",
    "LMBillingError",
    "LMCollectionLimitError",
    "LMConfigurationError",
    "LMError",
    "LMInvalidRequestError",
    "LMLockTimeoutError",
    "LMNotConfiguredError",
    "LMProviderError",
    "LMRateLimitError",
    "LMResponseTooLarge",
    "LMServerError",
    "LMStreamAssemblyError",
    "LMTimeoutError",
    "LMTransportError",
    "LMUnexpectedError",
    "LMUnsupportedFeatureError",
    "LMUnsupportedModelError",
    "PipelineError",
    "PipelineSpecError",
    "PoolClosed",
    "PoolError",
    "PoolSaturated",
    "PoolUnhealthy",
    "ProgramNotFound",
    "ProtocolError",
    "QueueTimeout",
    "RemoteError",
    "RequestDeadlineExceeded",
    "ResourceLimitExceeded",
    "RetrieverError",
    "SandboxCodeError",
    "SandboxError",
    "SandboxMemoryError",
    "SandboxTimeout",
    "SandboxUnavailable",
    "SandboxViolation",
    "SecurityError",
    "ServerDraining",
    "ServerError",
    "ServerSaturated",
    "SessionLost",
    "SignatureError",
    "SignatureFieldError",
    "StateError",
    "StepInputMissing",
    "StepTimeout",
    "StepValidationError",
    "ToolError",
    "ToolExecutionError",
    "UserError",
    "WorkerCrashed",
    "is_retryable",
    "is_retryable_lm_error",
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
    recovered), ``missing`` (output field names not found). DSPy's names for them are
    attributes too: ``adapter_name``, ``lm_response``, ``parsed_result``, and DSPy's
    constructor (``adapter_name=, signature=, lm_response=, message=, parsed_result=``)
    builds DSPy's message; ``signature`` is the signature being parsed when an adapter's
    ``parse`` raised it.
    """

    code = "adapter_parse_error"
    signature: Any = None

    def __init__(
        self,
        message: str | None = "",
        *,
        adapter_name: str | None = None,
        signature: Any = None,
        lm_response: str | None = None,
        parsed_result: Any = None,
        **fields: Any,
    ) -> None:
        if adapter_name is not None and signature is not None:
            names = list(getattr(signature, "output_fields", signature))
            message = parse_failure_text(adapter_name, lm_response, names, parsed_result, message)
            fields.setdefault("adapter", adapter_name)
            fields.setdefault("raw", lm_response)
            if parsed_result is not None:
                fields.setdefault("parsed", parsed_result)
        super().__init__(message or "", **fields)
        self.signature = signature
        self.adapter_name = fields.get("adapter")
        self.lm_response = fields.get("raw")
        self.parsed_result = parsed_result if parsed_result is not None else fields.get("parsed")


def parse_failure_text(
    adapter: str, raw: Any, expected: list[str], parsed: Any = None, message: str | None = None
) -> str:
    """DSPy 3.4.1's text for an adapter that could not parse a completion."""
    text = f"{message}\n\n" if message else ""
    text += (
        f"Adapter {adapter} failed to parse the LM response. \n\n"
        f"LM Response: {raw} \n\n"
        f"Expected to find output fields in the LM response: [{', '.join(expected)}] \n\n"
    )
    if parsed is not None:
        text += f"Actual output fields parsed from the LM response: [{', '.join(parsed)}] \n\n"
    return text


# ---------------------------------------------------------------------------- LM calls


class LMError(DSPexError):
    """A language-model call failed.

    Fields (``None`` when unknown), as DSPy's: ``model``, ``provider``, ``status``,
    ``request_id``, ``retry_after``, ``provider_code``; ``code`` is the error's stable code
    (DSPy's: ``"rate_limit"``, ``"timeout"``...). ``str()`` is ``"[model] message"`` when the
    model is known.
    """

    default_code: str = "lm_error"

    def __init__(self, message: str = "", *, code: str | None = None, **fields: Any) -> None:
        super().__init__(message, **fields)
        self.code = code or self.default_code
        for name in ("model", "provider", "status", "request_id", "retry_after", "provider_code"):
            if name not in fields:
                setattr(self, name, None)

    def __reduce__(self) -> tuple[Any, ...]:
        fields = dict(self.fields)
        if self.code != self.default_code:
            fields["code"] = self.code
        return (_rebuild, (type(self), self.message, fields))

    def __str__(self) -> str:
        model = self.fields.get("model")
        if not model:
            return self.message
        return f"[{model}] {self.message}" if self.message else f"[{model}]"


class LMAuthError(LMError):
    """The provider rejected the credentials (401/403)."""

    default_code = "auth"


class LMBadRequestError(LMError, ValueError):
    """The provider rejected the request as malformed; retrying will not help."""

    default_code = "invalid_request"


class ContextWindowExceeded(LMBadRequestError):
    """The prompt does not fit the model's context window (DSPy's default message and
    keyword-only form work: ``ContextWindowExceeded(model=..., message=...)``)."""

    default_code = "context_window_exceeded"

    def __init__(self, *args: Any, **fields: Any) -> None:
        message = fields.pop("message", None)
        if args:
            message = args[0]
        super().__init__("Context window exceeded" if message is None else message, **fields)


class LMRateLimitError(LMError):
    """429. ``retry_after`` is the number of seconds the server asked us to wait (or None)."""

    default_code = "rate_limit"


class LMServerError(LMError):
    """The provider failed (5xx, 408, 409); retryable."""

    default_code = "server"


class LMTimeoutError(LMError, TimeoutError):
    """The call's deadline passed (connect, first byte, or a slow body)."""

    default_code = "timeout"


class LMTransportError(LMError, ConnectionError):
    """The connection failed below HTTP (refused, reset, DNS...)."""

    default_code = "transport"


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


# --- adapters: custom types and tools ---


class ToolError(UserError, ValueError):
    """A tool was called wrongly: an unknown or invalid argument, or an async tool called sync.

    Fields: ``tool`` (the tool's name), ``arg`` (the offending argument, when one).
    """


class ToolExecutionError(DSPexError, RuntimeError):
    """A tool ran and raised, or could not be found for a tool call (carries ``tool``)."""


class CustomTypeError(UserError, ValueError):
    """A custom type (``Image``, ``Audio``, ``File``, ``Code``...) got a value it cannot hold."""


class CustomTypeUsageError(UserError, TypeError):
    """A custom type was constructed with conflicting or unsupported arguments."""


class SignatureFieldError(SignatureError, TypeError):
    """A class-form signature declares a field without InputField/OutputField (DSPy: TypeError)."""


# --- evaluate / modules ---


class EvaluationError(DSPexError):
    """Running a program over many examples (``Evaluate``, ``Parallel``) failed as a whole."""


class ExecutionCancelled(EvaluationError):
    """Too many examples failed (``max_errors`` reached); the rest were cancelled.

    Fields: ``errors`` (how many failed), ``max_errors``. DSPy raises a bare ``Exception`` with
    the same message at the same point.
    """


class ExampleTimeout(EvaluationError, TimeoutError):
    """One example exceeded its per-example deadline (``timeout=`` seconds); it counts as an
    error for ``max_errors`` and scores ``failure_score``."""


class EvaluationInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped an ``Evaluate``/``Parallel`` run: control flow, not an error.

    It is a ``KeyboardInterrupt`` (as DSPy raises), carrying what finished before the
    interrupt: ``partial`` (an ``EvaluationResult`` over the completed examples, or the list of
    results for ``Parallel``) and ``completed`` / ``total`` counts.
    """

    def __init__(self, message: str, *, partial: Any = None, completed: int = 0, total: int = 0):
        super().__init__(message)
        self.partial = partial
        self.completed = completed
        self.total = total

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_interrupted,
            (str(self), self.partial, self.completed, self.total),
        )


def _rebuild_interrupted(
    message: str, partial: Any, completed: int, total: int
) -> EvaluationInterrupted:
    return EvaluationInterrupted(message, partial=partial, completed=completed, total=total)


# --- security: allow-list and sandbox ---


class SandboxError(SecurityError):
    """Code run in :class:`dspex.sandbox.PythonSandbox` could not run to completion.

    Fields: ``reason`` (``"timeout"``, ``"memory"``, ``"violation"``, ``"crashed"``,
    ``"unavailable"``, ``"code"``...), ``detail`` where known.
    """


class SandboxUnavailable(SandboxError):
    """No isolation layer (bubblewrap) works on this machine; code is never run unisolated."""


class SandboxTimeout(SandboxError, TimeoutError):
    """Sandboxed code exceeded its wall-clock or CPU time; its whole process tree was killed."""


class SandboxMemoryError(SandboxError, MemoryError):
    """Sandboxed code exceeded its memory bound."""


class SandboxViolation(SandboxError):
    """Sandboxed code tried something the sandbox forbids (or was killed by a limit)."""


class SandboxCodeError(SandboxError):
    """The sandboxed code itself raised (the session stays usable). Fields: ``type``, ``args``."""


# --- runtime ---
# DSPy 3.4.1's exception names (``dspy.DSPyError``, ``dspy.LMNotConfiguredError``...), in this
# one tree: aliases where DSPex has the same error, small subclasses where it had none.

DSPyError = DSPexError
ContextWindowExceededError = ContextWindowExceeded
LMInvalidRequestError = LMBadRequestError


class LMProviderError(LMError):
    """The provider refused or failed a request (DSPy's base of the HTTP-status errors; DSPex's
    status errors derive from :class:`LMError` directly, so catch ``LMError`` for all of them)."""

    default_code = "provider"


class LMBillingError(LMProviderError):
    """The provider refused the request for billing/quota reasons (402)."""

    default_code = "billing"


class LMUnsupportedModelError(LMBadRequestError):
    """The provider does not know or serve the requested model."""

    default_code = "unsupported_model"


class LMConfigurationError(LMError, ConfigurationError):
    """The LM is configured wrongly (bad model string, missing key...)."""

    default_code = "configuration"


class LMNotConfiguredError(LMConfigurationError):
    """No LM is configured for a module call (``dspex.configure(lm=...)`` or ``lm=``)."""

    default_code = "not_configured"


class LMLockTimeoutError(LMError, TimeoutError):
    """Waiting for a shared LM resource (a cache or engine lock) timed out."""

    default_code = "lock_timeout"


class LMCollectionLimitError(LMError):
    """A streamed or collected reply exceeded its size limit."""

    default_code = "collection_limit"


class LMUnsupportedFeatureError(LMError):
    """The LM or provider does not support a requested feature (streaming, tools, n > 1...)."""

    default_code = "unsupported_feature"


class LMUnexpectedError(LMError):
    """The LM returned something DSPex cannot interpret."""

    default_code = "unexpected"


class LMStreamAssemblyError(LMUnexpectedError):
    """A streamed reply could not be assembled into a completion."""

    default_code = "stream_assembly"


def is_retryable_lm_error(error: BaseException) -> bool:
    """DSPy's name for :func:`is_retryable`."""
    return is_retryable(error)


class StateKeyMissing(StateError, KeyError):
    """Saved state lacks the entry of one of the module's parameters (a ``KeyError`` too, as
    DSPy raises). Nothing was loaded: ``load_state`` is all-or-nothing."""


__all__ += ["StateKeyMissing"]


# --- optimizers ---


class OptimizerError(UserError, AssertionError):
    """An optimizer was given a program or data it cannot work with.

    DSPy signals these cases with ``assert``; this class is also an ``AssertionError`` so
    code written against DSPy keeps catching it.
    """


__all__ += ["OptimizerError"]


# --- server ---


class ServerError(DSPexError):
    """``dspex serve`` refused or cut short a request. Field: ``program`` (name, if any)."""


class ServerSaturated(ServerError):
    """Every call slot and queue place is taken; retry after ``retry_after`` seconds."""


class ServerDraining(ServerError):
    """The server is shutting down: calls in flight finish, new ones are refused."""


class RequestDeadlineExceeded(ServerError, TimeoutError):
    """A request ran past its deadline (``timeout`` seconds) and was cancelled."""


class ProgramNotFound(ServerError, LookupError):
    """No program is served under that name (``program``)."""


# --- lm ---


class LMResponseTooLarge(LMError):
    """A reply (its body, or its body once gzip/deflate-inflated) passed the LM's size cap.

    Fields: ``provider``, ``model``, ``status``, ``limit`` (bytes). Not retryable: the same
    request would get the same reply. Raise the cap with ``LM(max_response_bytes=...)``.
    """


# --- optimizer runs ---


class RunDirError(OptimizerError):
    """An optimizer's run directory (``run_dir=``) cannot be used: unreadable, written by an
    incompatible version, or a checkpoint state that is not JSON. Field: ``path``."""


class RunDirMismatch(RunDirError):
    """``run_dir`` holds another run: a different optimizer, arguments, student or data.
    Field: ``parts`` (the names of what differs, e.g. ``["args", "trainset"]``)."""


__all__ += ["RunDirError", "RunDirMismatch"]


# --- retrieval ---


class RetrieverError(DSPexError, ValueError):
    """A retrieval server answered with an error or with something that is not a result."""


# --- ray / fan-out ---


class ProgramNotPortable(UserError, ValueError):
    """A program (or its metric) cannot be pickled to fan-out workers (``backend=``)."""


# --- modules: code interpreters ---


class CodeInterpreterError(DSPexError, RuntimeError):
    """A code interpreter failed in a way the submitted code cannot repair (setup, a dead
    process, a broken protocol, use after ``shutdown``). DSPy's
    ``dspy.primitives.code_interpreter.CodeInterpreterError``; code-running modules do not
    retry it."""


class CodeExecutionError(CodeInterpreterError):
    """The submitted code raised inside a healthy interpreter (recoverable: ProgramOfThought
    and CodeAct feed the error back to the LM and retry). Field: ``type`` (the exception's
    class name inside the interpreter), when known."""


# --- modules: ReActV2 ---


class AgentNoFinalOutputs(DSPexError, ValueError):
    """``ReActV2`` ended without final outputs: after its loop stopped (``max_iters``, a turn
    with no tool calls, a reply that did not parse...), the forced ``submit`` request produced no
    ``submit`` call or one that failed. Field: ``reason`` (why the loop stopped). A
    ``ValueError``, as DSPy raises."""


__all__ += ["AgentNoFinalOutputs"]


# --- fine-tuning ---


class FinetuneError(DSPexError, RuntimeError):
    """A fine-tuning job failed: the provider reported it failed or cancelled, answered with
    an HTTP error, or could not be reached. Fields (when known): ``job_id``, ``status``,
    ``url``."""


class FinetuneTimeout(FinetuneError, TimeoutError):
    """A fine-tuning job was not finished by its deadline (the remote job keeps running;
    ``job_id`` names it)."""


class FinetuneDataError(UserError, ValueError):
    """Training data (or its format) a provider or adapter cannot fine-tune on."""


class OptimizerTypeError(UserError, TypeError):
    """An optimizer was given an object of the wrong kind (BetterTogether's optimizers must
    be Teleprompters)."""


__all__ += ["FinetuneDataError", "FinetuneError", "FinetuneTimeout", "OptimizerTypeError"]


# --- optimizer resume ---


class RunNotFound(RunDirError, FileNotFoundError):
    """``resume=path`` names no run to resume: the directory does not exist, or no run has
    saved a checkpoint there yet (start it with ``run_dir=path``). Field: ``path``."""


__all__ += ["RunNotFound"]


# --- modules: Flex ---


class FlexInputError(CallError, TypeError):
    """A ``Flex`` was called with positional inputs (its inputs are keywords only; a
    ``TypeError``, as DSPy raises)."""


class FlexSourceError(CodeInterpreterError):
    """A ``Flex``'s ``module_src`` cannot be bound or its ``forward`` gave no usable result: no
    ``dspy.Module`` class with ``forward``, a return value that is not the signature's outputs
    or does not fit their types. Field: ``field`` (the output concerned), when one is."""


class FlexBridgeError(CodeInterpreterError):
    """The code of a ``Flex`` asked the host for something the bridge refuses: a class that is
    not bridgeable, an LM option sandboxed code may not set, a tool the Flex was not given,
    its own ``interpreter_factory``, an unknown predictor handle."""


class FlexBudgetExceeded(FlexBridgeError):
    """A ``Flex`` forward made more predictor calls than its ``max_predictor_calls``. Field:
    ``budget``."""


__all__ += ["FlexBridgeError", "FlexBudgetExceeded", "FlexInputError", "FlexSourceError"]


# --- module calls ---


class CallStopped(DSPexError):
    """A module call was refused because the work it belongs to was stopped: an optimizer's
    examples run ahead that turned out not to be needed stop at their next module call
    (a program's sync ``forward`` runs in a worker thread, which cannot be interrupted)."""


__all__ += ["CallStopped"]
