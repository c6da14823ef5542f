"""Running steps: per-run state, timeouts, retries, error attribution, metrics, telemetry.

Every step runs through :func:`run_step`, which never raises a step's failure: it returns a
:class:`~dspex.pipelines.result.StepResult` whose ``error`` is a typed, attributed error
(``PipelineError`` naming the step path, or ``SecurityError``). The caller decides, from the
frame's ``continue_on_error``, whether to record it and go on or raise it. Only cancellation
propagates as an exception.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dspex.errors import (
    PipelineError,
    SecurityError,
    StepInputMissing,
    StepTimeout,
    StepValidationError,
    UserError,
)
from dspex.lm.usage import UsageTracker, _tracker
from dspex.pipelines.result import StepResult, total_tokens
from dspex.telemetry import events

if TYPE_CHECKING:
    from dspex.bridge.session import DSPySession
    from dspex.pipelines.steps import Step

__all__ = ["Frame", "Run", "run_sequence", "run_step"]

_NOT_RETRYABLE = (UserError, SecurityError, StepInputMissing, StepValidationError)


@dataclass(slots=True)
class Frame:
    """Options in force for the steps of one pipeline level (nested pipelines bring their own)."""

    continue_on_error: bool = False
    step_timeout: float | None = None
    retries: int = 0
    backoff: float = 0.05


@dataclass
class Run:
    """What the steps of one run share: recorded errors, the DSPy session, the step listener."""

    pipeline: str
    on_step: Callable[[StepResult], None] | None = None
    session_mode: str = "run"
    errors: list[BaseException] = field(default_factory=list)
    current: str = ""
    _session: DSPySession | None = None
    _modules: dict[int, Any] = field(default_factory=dict)

    def dspy_session(self) -> DSPySession:
        """The run's DSPy session (one worker for every DSPy step of the run), made on demand."""
        if self._session is None:
            from dspex.bridge.session import DSPySession

            self._session = DSPySession()
        return self._session

    def module_for(self, key: int, build: Callable[[], Any]) -> Any:
        """A module built once per run (DSPy steps built in the run's session)."""
        module = self._modules.get(key)
        if module is None:
            module = self._modules[key] = build()
        return module

    async def close(self) -> None:
        """Drop the run's objects in the DSPy worker (the session's close blocks briefly)."""
        session, self._session = self._session, None
        self._modules.clear()
        if session is not None:
            await asyncio.to_thread(session.close)


def _attribute(exc: Exception, path: str) -> BaseException:
    """A step's failure as a typed error naming the step (attributed errors pass through)."""
    if isinstance(exc, PipelineError | SecurityError):
        return exc
    return PipelineError(
        f"step {path!r} failed: {type(exc).__name__}: {exc}", step=path, cause=exc
    ).with_traceback(exc.__traceback__)


async def run_step(
    step: Step,
    state: MutableMapping[str, Any] | Any,
    run: Run,
    frame: Frame,
    path: str,
) -> StepResult:
    """Run ``step`` on ``state`` with its timeout and retries; its result (never raises)."""
    timeout = step.timeout if step.timeout is not None else frame.step_timeout
    retries = step.retries if step.retries is not None else frame.retries
    children: list[StepResult] = []
    parent = _tracker.get()
    tracker = UsageTracker()
    token = _tracker.set(tracker)
    attempts = 0
    error: BaseException | None = None
    outputs: dict[str, Any] = {}
    run.current = path
    start = time.perf_counter()
    try:
        while True:
            attempts += 1
            try:
                if timeout is None:
                    outputs = await step.execute(state, run, frame, path, children)
                else:
                    cm = asyncio.timeout(timeout)
                    try:
                        async with cm:
                            outputs = await step.execute(state, run, frame, path, children)
                    except TimeoutError:
                        if not cm.expired():
                            raise
                        raise StepTimeout(
                            f"step {path!r} exceeded its {timeout:g} s timeout and was cancelled",
                            step=path,
                            timeout=timeout,
                        ) from None
                error = None
                break
            except Exception as exc:
                error = _attribute(exc, path)
                if error is not exc:
                    error.__cause__ = exc
                if attempts > retries or isinstance(exc, _NOT_RETRYABLE):
                    break
                children.clear()
                await asyncio.sleep(step.backoff_for(attempts, frame.backoff))
    finally:
        _tracker.reset(token)
    duration = time.perf_counter() - start
    usage = tracker.get_lm_usage()
    if parent is not None:
        for model, counts in usage.items():
            parent.add(model, counts)
    if error is not None:
        status = "error"
    elif any(c.status != "ok" for c in children):
        status = "partial"
    else:
        status = "ok"
    result = StepResult(
        path,
        step.kind,
        step.implementation,
        status,
        duration,
        attempts,
        outputs,
        usage,
        error,
        children,
    )
    if events.has_handlers():
        events.emit(
            "dspex.pipeline.step",
            {"duration": duration, "tokens": float(total_tokens(usage)), "attempts": attempts},
            {
                "pipeline": run.pipeline,
                "step": path,
                "kind": step.kind,
                "implementation": step.implementation,
                "status": status,
                "error": None if error is None else type(error).__name__,
            },
        )
    if run.on_step is not None:
        run.on_step(result)
    return result


async def run_sequence(
    steps: Sequence[Step],
    state: MutableMapping[str, Any],
    run: Run,
    frame: Frame,
    prefix: str,
    results: list[StepResult],
) -> None:
    """Run ``steps`` one after another, writing each one's outputs into ``state``.

    A failed step raises its error, unless ``frame.continue_on_error``: then it is recorded
    in ``run.errors`` and the next step runs on the state as it is.
    """
    for step in steps:
        result = await run_step(step, state, run, frame, prefix + step.name)
        results.append(result)
        if result.error is not None:
            if not frame.continue_on_error:
                raise result.error
            run.errors.append(result.error)
        elif result.outputs:
            state.update(result.outputs)
