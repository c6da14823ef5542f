"""``Module.batch``: a program over many inputs, ``num_threads`` at a time.

A program with a native ``aforward`` runs as tasks on one event loop (no thread per call);
a sync one in a pool of ``num_threads`` worker threads. Both share :class:`_Outcomes`, which
records results and errors and decides when ``max_errors`` stops the batch, as DSPy's
``Parallel`` does: failed items give ``None``, each failure is logged, and reaching
``max_errors`` cancels what has not started and raises.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import traceback
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

from dspex import settings
from dspex._sync import run_sync
from dspex.errors import CallError

__all__ = ["BatchCancelled", "run_batch"]

logger = logging.getLogger("dspex.utils.parallelizer")


class BatchCancelled(Exception):
    """The batch stopped after ``max_errors`` failures (DSPy raises a plain ``Exception``)."""


def _call_args(example: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    from dspex.primitives.example import Example

    if isinstance(example, Example):
        return (), dict(example.inputs())
    if isinstance(example, dict):
        return (), dict(example)
    if isinstance(example, tuple):
        return example, {}
    raise CallError(
        f"Invalid example type: {type(example)}, only supported types are Example, dict and tuple"
    )


class _Outcomes:
    """Results by index and the error budget (no I/O: both runners drive it)."""

    def __init__(self, size: int, max_errors: int, provide_traceback: bool) -> None:
        self.results: list[Any] = [None] * size
        self.errors: dict[int, BaseException] = {}
        self.max_errors = max_errors
        self.provide_traceback = provide_traceback
        self.cancelled = False

    def ok(self, index: int, value: Any) -> None:
        self.results[index] = value

    def failed(self, index: int, item: Any, exc: BaseException) -> None:
        self.errors[index] = exc
        if self.provide_traceback:
            tb = "".join(traceback.format_exception(exc))
            logger.error(f"Error for {item}: {exc}\n{tb}")
        else:
            logger.error(f"Error for {item}: {exc}. Set `provide_traceback=True` for traceback.")
        if len(self.errors) >= self.max_errors:
            self.cancelled = True

    def finish(self, examples: Sequence[Any], return_failed: bool) -> Any:
        if self.cancelled:
            logger.warning("Execution cancelled due to errors or interruption.")
            raise BatchCancelled("Execution cancelled due to errors or interruption.")
        if not return_failed:
            return self.results
        failed = sorted(self.errors)
        return self.results, [examples[i] for i in failed], [self.errors[i] for i in failed]


async def _run_async(program: Any, calls: list[Any], out: _Outcomes, width: int) -> None:
    gate = asyncio.Semaphore(width)

    async def one(index: int, item: Any) -> None:
        async with gate:
            if out.cancelled:
                return
            args, kwargs = item
            try:
                out.ok(index, await program.acall(*args, **kwargs))
            except Exception as exc:
                out.failed(index, kwargs or args, exc)
                if out.cancelled:
                    for task in tasks:
                        if task is not asyncio.current_task():
                            task.cancel()

    tasks = [asyncio.ensure_future(one(i, item)) for i, item in enumerate(calls)]
    await asyncio.gather(*tasks, return_exceptions=True)


def _run_threads(program: Any, calls: list[Any], out: _Outcomes, width: int) -> None:
    def one(index: int, item: Any) -> None:
        if out.cancelled:
            return
        args, kwargs = item
        try:
            out.ok(index, program(*args, **kwargs))
        except Exception as exc:
            out.failed(index, kwargs or args, exc)

    with ThreadPoolExecutor(max_workers=width, thread_name_prefix="dspex-batch") as pool:
        futures = [
            pool.submit(contextvars.copy_context().run, one, i, item)
            for i, item in enumerate(calls)
        ]
        for future in as_completed(futures):
            if out.cancelled:
                for pending in futures:
                    pending.cancel()
            future.result() if not future.cancelled() else None


def run_batch(
    program: Any,
    examples: Sequence[Any],
    *,
    num_threads: int | None = None,
    max_errors: int | None = None,
    return_failed_examples: bool = False,
    provide_traceback: bool | None = None,
) -> Any:
    now = settings.current()
    width = now.num_threads if num_threads is None else num_threads
    if not isinstance(width, int) or width < 1:
        raise CallError(f"num_threads must be a positive integer, got {num_threads!r}")
    out = _Outcomes(
        len(examples),
        now.max_errors if max_errors is None else max_errors,
        now.provide_traceback if provide_traceback is None else provide_traceback,
    )
    calls = [_call_args(example) for example in examples]
    if program._has_async_forward():
        run_sync(_run_async(program, calls, out, width))
    else:
        _run_threads(program, calls, out, width)
    return out.finish(examples, return_failed_examples)
