"""Native ``Parallel``: run ``(module, example)`` pairs concurrently on one event loop.

DSPy's API and rules: an ``Example`` is unpacked with ``.inputs()`` (``access_examples``), a
dict as keyword arguments, a tuple as positional ones, a list is handed whole to a nested
``Parallel``; a failed pair leaves ``None`` in the results; ``max_errors`` failures cancel the
rest (:class:`~dspex.errors.ExecutionCancelled`); ``return_failed_examples=True`` returns
``(results, failed_examples, exceptions)``. Underneath, modules run through ``acall`` with at
most ``num_threads`` in flight (a plain sync callable runs in a worker thread); ``timeout`` is
a per-pair deadline instead of DSPy's straggler re-submission.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from dspex.errors import EvaluationInterrupted
from dspex.evaluate.display import CountProgress
from dspex.modules.executor import (
    Executor,
    RunOutcome,
    async_entry,
    configured_lm_customized,
    customized_sync_lm,
    lm_classes_may_customize,
)
from dspex.primitives.example import Example
from dspex.primitives.module import ACALL, acall_awaitable

__all__ = ["Parallel"]


class Parallel:
    """Concurrent execution of ``(module, example)`` pairs (see the module docstring)."""

    def __init__(
        self,
        num_threads: int | None = None,
        max_errors: int | None = None,
        access_examples: bool = True,
        return_failed_examples: bool = False,
        provide_traceback: bool | None = None,
        disable_progress_bar: bool = False,
        timeout: float | None = None,
        straggler_limit: int = 3,
    ) -> None:
        self.num_threads = num_threads
        self.max_errors = max_errors
        self.access_examples = access_examples
        self.return_failed_examples = return_failed_examples
        self.provide_traceback = provide_traceback
        self.disable_progress_bar = disable_progress_bar
        self.timeout = timeout
        self.straggler_limit = straggler_limit  # accepted for DSPy compatibility; unused
        self.failed_examples: list[Any] = []
        self.exceptions: list[BaseException] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        return await self.aforward(*args, **kwargs)

    def forward(self, exec_pairs: Sequence[tuple[Any, Any]], num_threads: int | None = None) -> Any:
        executor, progress = self._executor(exec_pairs, num_threads)
        with progress:
            outcome = executor.run(self._process(executor), exec_pairs)
        return self._finish(exec_pairs, outcome)

    async def aforward(
        self, exec_pairs: Sequence[tuple[Any, Any]], num_threads: int | None = None
    ) -> Any:
        executor, progress = self._executor(exec_pairs, num_threads)
        with progress:
            outcome = await executor.arun(self._process(executor), exec_pairs)
        return self._finish(exec_pairs, outcome)

    # ------------------------------------------------------------------ shared decisions
    def _executor(
        self, exec_pairs: Sequence[tuple[Any, Any]], num_threads: int | None
    ) -> tuple[Executor[tuple[Any, Any], Any], Any]:
        progress = CountProgress(len(exec_pairs), not self.disable_progress_bar)
        shown = progress.enabled  # a hidden bar needs no per-pair updates
        executor: Executor[tuple[Any, Any], Any] = Executor(
            num_threads=num_threads if num_threads is not None else self.num_threads,
            max_errors=self.max_errors,
            provide_traceback=self.provide_traceback,
            timeout=self.timeout,
            on_result=(lambda _i, _v: progress.add(None)) if shown else None,
            on_error=(lambda _i, _e: progress.fail()) if shown else None,
        )
        return executor, progress

    def _process(
        self, executor: Executor[tuple[Any, Any], Any]
    ) -> Callable[[tuple[Any, Any]], Awaitable[Any]]:
        """The per-pair step: returns the module call's awaitable (one coroutine, no wrapper).

        Decided per call, since classes, settings and modules can change between calls:
        whether any LM class could make a program run the sync way (usually none can: then
        no program is inspected), and, when one could, each module's entry once per call.
        """
        inline = executor.num_threads == 1
        customizing = lm_classes_may_customize()
        # the settings LM: the same for every pair
        configured = customizing and configured_lm_customized()
        calls: dict[int, Callable[..., Awaitable[Any]]] = {}
        access_examples = self.access_examples

        def process(pair: tuple[Any, Any]) -> Awaitable[Any]:
            module, example = pair
            if (
                type(example) is dict
                and not customizing
                and getattr(getattr(module, "acall", None), "__func__", None) is ACALL
            ):  # the common case: a module keeping Module's acall, a dict of inputs (an
                # instance's own acall is no bound method; reading __dict__ instead would
                # materialize the instance's dict, which slows every attribute read after)
                return acall_awaitable(module, (), example)
            call = calls.get(id(module))
            if call is None:
                sync = customizing and customized_sync_lm(module, configured)
                call = calls[id(module)] = async_entry(module, inline=inline, sync=sync)
            if type(example) is dict:  # a dict is never an Example
                return call(**example)
            if isinstance(example, Example):
                if access_examples:
                    return call(**example.inputs())
                return call(example)
            if isinstance(example, dict):
                return call(**example)
            if isinstance(example, list) and type(module).__name__ == "Parallel":
                return call(example)
            if isinstance(example, tuple):
                return call(*example)
            raise ValueError(
                f"Invalid example type: {type(example)}, only supported types are Example, "
                "dict, list and tuple"
            )

        return process

    def _finish(self, exec_pairs: Sequence[tuple[Any, Any]], outcome: RunOutcome[Any]) -> Any:
        if outcome.interrupted:
            raise EvaluationInterrupted(
                f"Parallel interrupted after {outcome.completed} of {len(exec_pairs)} pairs",
                partial=outcome.results,
                completed=outcome.completed,
                total=len(exec_pairs),
            )
        if not self.return_failed_examples:
            return outcome.results
        for idx in outcome.failed_indices:
            self.failed_examples.append(exec_pairs[idx][1])
            self.exceptions.append(outcome.errors[idx])
        return outcome.results, self.failed_examples, self.exceptions
