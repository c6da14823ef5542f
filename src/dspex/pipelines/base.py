"""``Pipeline``: steps over a state dict, run sync (``run``), async (``arun``) or streamed.

A pipeline is a ``dspex.Module``: calling it (``pipe(question=...)``/``await pipe.acall``)
returns a ``Prediction`` of the final state, and it can be a step of another pipeline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from dspex._sync import run_sync
from dspex.errors import PipelineSpecError, StepTimeout
from dspex.lm.usage import UsageTracker, _tracker
from dspex.pipelines.result import PipelineResult, StepResult
from dspex.pipelines.runner import Frame, Run, run_sequence
from dspex.pipelines.spec import normalize
from dspex.pipelines.steps import Step, combine_implementations
from dspex.primitives.module import Module
from dspex.primitives.prediction import Prediction

__all__ = ["Pipeline", "build"]

_SESSIONS = ("run", "step")


class Pipeline(Module):
    """Steps run in order over a state dict that starts as the run's inputs.

    Options:

    - ``timeout``: seconds for the whole run (the running step is cancelled);
    - ``step_timeout``, ``retries``, ``backoff``: defaults for every step (a step's own win);
      retries wait ``backoff * 2**(attempt-1)`` and skip developer mistakes (missing
      inputs, bad specs, validation and security errors);
    - ``continue_on_error``: record a failed step's error in ``result.errors`` and go on
      (also for parallel and map sub-steps) instead of raising it;
    - ``session``: ``"run"`` (default) builds the DSPy steps of each run in one
      ``DSPySession`` (one worker, shared state), closed when the run ends; ``"step"``
      builds each DSPy step once in its own session and reuses it across runs.
    """

    def __init__(
        self,
        steps: Any,
        *,
        name: str = "pipeline",
        timeout: float | None = None,
        step_timeout: float | None = None,
        retries: int = 0,
        backoff: float = 0.05,
        continue_on_error: bool = False,
        session: str = "run",
    ) -> None:
        super().__init__()
        if not isinstance(name, str) or not name or "/" in name:
            raise PipelineSpecError(
                f"a pipeline name must be a non-empty string without '/', got {name!r}",
                reason="name",
            )
        if session not in _SESSIONS:
            raise PipelineSpecError(
                f"session must be one of {_SESSIONS}, got {session!r}", reason="session"
            )
        # validated like a step's own options
        Step(name, timeout=timeout, retries=retries, backoff=backoff)
        Step(name, timeout=step_timeout)
        self.name = name
        self.steps: list[Step] = normalize(steps)
        self.timeout = timeout
        self.session = session
        self.frame = Frame(
            continue_on_error=bool(continue_on_error),
            step_timeout=step_timeout,
            retries=retries,
            backoff=backoff,
        )

    def __repr__(self) -> str:
        names = ", ".join(s.name for s in self.steps)
        return f"Pipeline({self.name!r}, [{names}], implementation={self.implementation!r})"

    @property
    def implementation(self) -> str:
        """``"native"``, ``"dspy"`` or ``"mixed"``: where this pipeline's steps run."""
        return combine_implementations(self.steps)

    # ------------------------------------------------------------------ running
    def _inputs(self, inputs: Any, kw: dict[str, Any]) -> dict[str, Any]:
        if inputs is None:
            return kw
        if not isinstance(inputs, Mapping):
            raise PipelineSpecError(
                f"pipeline {self.name!r} takes a dict of inputs, got {type(inputs).__name__}",
                reason="inputs",
            )
        return {**inputs, **kw}

    async def _execute(self, inputs: dict[str, Any], on_step: Any = None) -> PipelineResult:
        run = Run(self.name, on_step=on_step, session_mode=self.session)
        state = dict(inputs)
        results: list[StepResult] = []
        tracker = UsageTracker()
        parent = _tracker.get()
        token = _tracker.set(tracker)
        start = time.perf_counter()
        try:
            if self.timeout is None:
                await run_sequence(self.steps, state, run, self.frame, "", results)
            else:
                cm = asyncio.timeout(self.timeout)
                try:
                    async with cm:
                        await run_sequence(self.steps, state, run, self.frame, "", results)
                except TimeoutError:
                    if not cm.expired():
                        raise
                    error = StepTimeout(
                        f"pipeline {self.name!r} exceeded its {self.timeout:g} s timeout; "
                        f"step {run.current!r} was cancelled",
                        step=self.name,
                        timeout=self.timeout,
                        running=run.current,
                    )
                    if not self.frame.continue_on_error:
                        raise error from None
                    run.errors.append(error)
        finally:
            _tracker.reset(token)
            await run.close()
        usage = tracker.get_lm_usage()
        if parent is not None:
            for model, counts in usage.items():
                parent.add(model, counts)
        return PipelineResult(
            self.name,
            dict(inputs),
            state,
            results,
            run.errors,
            time.perf_counter() - start,
            usage,
        )

    async def arun(self, inputs: Mapping[str, Any] | None = None, /, **kw: Any) -> PipelineResult:
        """Run the pipeline on ``inputs`` (a dict, or keyword arguments); its result."""
        return await self._execute(self._inputs(inputs, kw))

    def run(self, inputs: Mapping[str, Any] | None = None, /, **kw: Any) -> PipelineResult:
        """``arun`` from synchronous code."""
        return run_sync(self._execute(self._inputs(inputs, kw)))

    async def astream(
        self, inputs: Mapping[str, Any] | None = None, /, **kw: Any
    ) -> AsyncIterator[StepResult | PipelineResult]:
        """Each step's result as soon as it finishes (sub-steps before their parent), then
        the ``PipelineResult``. Leaving the loop early cancels the run."""
        queue: asyncio.Queue[StepResult] = asyncio.Queue()
        task = asyncio.ensure_future(self._execute(self._inputs(inputs, kw), queue.put_nowait))
        try:
            while True:
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    yield getter.result()
                    continue
                getter.cancel()
                while not queue.empty():
                    yield queue.get_nowait()
                yield task.result()
                return
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    # ------------------------------------------------------------------ as a module
    async def aforward(self, **inputs: Any) -> Prediction:
        return (await self._execute(inputs)).to_prediction()


def build(steps: Any, **options: Any) -> Pipeline:
    """``dspex.pipeline([...], **options)``: a :class:`Pipeline` (options documented there)."""
    return Pipeline(steps, **options)
