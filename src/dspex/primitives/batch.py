"""``Module.batch``: a program over many inputs, ``num_threads`` at a time.

A program with a native ``aforward`` runs as tasks on one event loop (no thread per call);
a sync one in a pool of ``num_threads`` worker threads. Both share :class:`~dspex.utils.parallelizer.Outcomes`, which
records results and errors and decides when ``max_errors`` stops the batch, as DSPy's
``Parallel`` does: failed items give ``None``, each failure is logged, and reaching
``max_errors`` cancels what has not started and raises. With ``backend="process"`` or
``"ray"`` the calls run on a pool of workers instead (:mod:`dspex.pool.fanout`), under the
same bookkeeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from dspex import settings
from dspex._sync import run_sync
from dspex.errors import CallError
from dspex.utils.parallelizer import BatchCancelled, Outcomes, ParallelExecutor

__all__ = ["BatchCancelled", "run_batch"]


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


async def _run_async(
    program: Any,
    calls: list[Any],
    out: Outcomes,
    width: int,
    straggle_after: float = 0,
    limit: int = 0,
) -> None:
    gate = asyncio.Semaphore(width)
    attempts: dict[int, list[asyncio.Future[None]]] = {}

    async def one(index: int, item: Any) -> None:
        async with gate:
            if not out.start(index):
                return
            args, kwargs = item
            try:
                value = await program.acall(*args, **kwargs)
            except Exception as exc:
                out.failed(index, kwargs or args, exc)
                if out.cancelled:
                    for task in (t for ts in attempts.values() for t in ts):
                        if task is not asyncio.current_task():
                            task.cancel()
            else:
                out.ok(index, value)
            for other in attempts[index]:  # the item is settled: its other attempt stops
                if other is not asyncio.current_task():
                    other.cancel()

    def launch(index: int) -> asyncio.Future[None]:
        task = asyncio.ensure_future(one(index, calls[index]))
        attempts.setdefault(index, []).append(task)
        return task

    pending = {launch(i) for i in range(len(calls))}
    poll = min(1.0, straggle_after) if straggle_after > 0 else None
    while pending:
        _, pending = await asyncio.wait(pending, timeout=poll)
        for index in out.stragglers(straggle_after, limit):
            pending.add(launch(index))


def _run_threads(
    program: Any, calls: list[Any], out: Outcomes, width: int, timeout: float, limit: int
) -> None:
    executor = ParallelExecutor(
        num_threads=width, max_errors=out.max_errors, timeout=timeout, straggler_limit=limit
    )
    executor.provide_traceback = out.provide_traceback
    try:
        out.results = executor.execute(lambda item: program(*item[0], **item[1]), calls)
    finally:
        out.exceptions_map = executor.exceptions_map
        if executor.cancel_jobs.is_set():
            out.cancel_jobs.set()


class _Submitted:
    """A program stand-in whose ``acall`` runs the call on a fan-out pool."""

    def __init__(self, fan: Any) -> None:
        self.fan = fan

    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        return await self.fan.submit((args, kwargs))


async def _run_fanned(fan: Any, calls: list[Any], out: Outcomes) -> None:
    try:
        await _run_async(_Submitted(fan), calls, out, max(1, len(calls)))
    finally:
        await fan.drain()


def run_batch(
    program: Any,
    examples: Sequence[Any],
    *,
    num_threads: int | None = None,
    max_errors: int | None = None,
    return_failed_examples: bool = False,
    provide_traceback: bool | None = None,
    timeout: float = 120,
    straggler_limit: int = 3,
    backend: str | None = None,
) -> Any:
    """``program`` over ``examples``; an item still running after ``timeout`` seconds once at
    most ``straggler_limit`` items are left gets a second attempt (the first to finish wins),
    as DSPy's executor does; ``timeout <= 0`` turns that off. ``backend="process"``/``"ray"``
    runs the calls on worker processes (:mod:`dspex.pool.fanout`), without re-runs."""
    now = settings.current()
    width = now.num_threads if num_threads is None else num_threads
    if not isinstance(width, int) or width < 1:
        raise CallError(f"num_threads must be a positive integer, got {num_threads!r}")
    out = Outcomes(
        len(examples),
        now.max_errors if max_errors is None else max_errors,
        now.provide_traceback if provide_traceback is None else provide_traceback,
    )
    calls = [_call_args(example) for example in examples]
    if backend is None:  # not given: the fan-out setting decides (None: in process)
        backend = now.fanout_backend
    if backend is not None:
        from dspex.pool.fanout import resolve

        fan = resolve(backend, "batch", program, num_threads=width, total=len(calls))
    else:
        fan = None
    if fan is not None:  # calls on worker processes: no straggler re-runs
        run_sync(_run_fanned(fan, calls, out))
    elif program._has_async_forward():
        run_sync(_run_async(program, calls, out, width, timeout, straggler_limit))
    else:
        _run_threads(program, calls, out, width, timeout, straggler_limit)
    out.check()
    if not return_failed_examples:
        return out.results
    failed = sorted(out.exceptions_map)
    return out.results, [examples[i] for i in failed], [out.exceptions_map[i] for i in failed]
