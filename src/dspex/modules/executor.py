"""Run one async function over many items with bounded concurrency on one event loop.

The engine under ``Evaluate``, ``Parallel`` and ``Module.batch``-style fan-out. DSPy's
``ParallelExecutor`` uses a thread per slot and a hard-coded straggler re-submit; here a
fixed set of worker tasks pulls items from a shared iterator, so at most ``num_threads`` items
are in flight, and an optional per-item deadline (``timeout``) replaces the straggler logic.

Error policy (DSPy's): an item that raises is logged and recorded (its result stays ``None``);
when the number of failures reaches ``max_errors`` the remaining items are cancelled and
:class:`~dspex.errors.ExecutionCancelled` is raised. Ctrl-C in a sync caller stops the run
cleanly: in-flight items are cancelled and :class:`~dspex.errors.EvaluationInterrupted` (a
``KeyboardInterrupt``) is raised by the caller with the partial results.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
import threading
import time
import traceback
import weakref
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from dspex import settings
from dspex._sync import run_sync
from dspex.errors import ExampleTimeout, ExecutionCancelled
from dspex.modules.predict import Predict
from dspex.primitives.module import Module, Parameter

__all__ = [
    "DEFAULT_MAX_ERRORS",
    "DEFAULT_NUM_THREADS",
    "INLINE_BUDGET",
    "SLOW_CALLS",
    "AsyncCaller",
    "Executor",
    "RunOutcome",
    "customized_sync_lm",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_NUM_THREADS = 8
"""DSPy's ``settings.num_threads`` default."""
DEFAULT_MAX_ERRORS = 10
"""DSPy's ``settings.max_errors`` default."""


INLINE_BUDGET = 0.002
"""Seconds an adaptive sync call (a metric) may take on the loop; after :data:`SLOW_CALLS`
calls over it (a blocking metric, not one unlucky scheduling pause) calls move to a thread."""
SLOW_CALLS = 3


class AsyncCaller:
    """Calls a program, module or metric from the event loop.

    An object with an async ``acall`` (every ``Module``) or a coroutine function is awaited.
    A plain sync callable runs inline when ``inline`` (``num_threads=1``: nothing to overlap,
    and DSPy runs it in the caller's thread), otherwise in a worker thread — or, when
    ``adaptive``, inline until :data:`SLOW_CALLS` calls took longer than :data:`INLINE_BUDGET`.
    ``sync=True`` calls a module through its sync ``__call__`` even though it has ``acall``
    (see :func:`customized_sync_lm`).
    """

    def __init__(
        self, fn: Callable[..., Any], *, inline: bool, adaptive: bool = False, sync: bool = False
    ) -> None:
        self.fn = fn
        acall = None if sync else getattr(fn, "acall", None)
        self.async_fn: Callable[..., Any] | None = (
            acall if acall is not None and inspect.iscoroutinefunction(acall) else None
        )
        if self.async_fn is None and inspect.iscoroutinefunction(fn):
            self.async_fn = fn
        self.inline = inline
        self.adaptive = adaptive and not inline
        self.slow_calls = 0

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.async_fn is not None:
            return await self.async_fn(*args, **kwargs)
        if self.inline:
            return self.fn(*args, **kwargs)
        if self.adaptive:
            start = time.perf_counter()
            value = self.fn(*args, **kwargs)
            if time.perf_counter() - start > INLINE_BUDGET:
                self.slow_calls += 1
                self.adaptive = self.slow_calls < SLOW_CALLS  # it blocks: use a thread
            return value
        return await asyncio.to_thread(self.fn, *args, **kwargs)


def _defined_in(cls: type, name: str) -> type | None:
    return next((klass for klass in cls.__mro__ if name in klass.__dict__), None)


_PLAIN = frozenset({bool, int, float, str, type(None)})
_STRUCTURE = (Module, Parameter)
_RUNTIME_LISTS = frozenset({"history", "callbacks"})
_SYNC_OVERRIDES: weakref.WeakKeyDictionary[type, bool] = weakref.WeakKeyDictionary()


def _overrides_sync_call(lm_type: type) -> bool:
    """Whether ``lm_type`` defines ``__call__`` below its ``acall`` (cached per class)."""
    known = _SYNC_OVERRIDES.get(lm_type)
    if known is None:
        sync_def, async_def = _defined_in(lm_type, "__call__"), _defined_in(lm_type, "acall")
        known = (
            sync_def is not None
            and async_def is not None
            and sync_def is not async_def
            and issubclass(sync_def, async_def)
        )
        _SYNC_OVERRIDES[lm_type] = known
    return known


def _holds_modules(module: Any) -> bool:
    """Whether any attribute of ``module`` is (or lists) a module or parameter.

    ``history`` and ``callbacks`` are the runtime's own lists (LM call records, callback
    handlers), never sub-modules; ``history`` grows with every call, so it is not scanned.
    """
    for name, value in module.__dict__.items():
        if name in _RUNTIME_LISTS:
            continue
        kind = type(value)
        if kind in _PLAIN:
            continue
        if kind is list or kind is tuple or kind is dict:
            for item in value.values() if kind is dict else value:
                if isinstance(item, _STRUCTURE):
                    return True
        elif isinstance(value, (*_STRUCTURE, list, tuple, dict)):
            return True  # a module, parameter or container subclass: take the full walk
    return False


def customized_sync_lm(program: Any) -> bool:
    """Whether an LM the program uses customizes its sync ``__call__`` below its ``acall``
    (a test double that sleeps or counts in ``__call__``, as DSPy users write them).

    DSPy's ``Evaluate``/``Parallel`` call programs synchronously, so such an override runs
    there; ours would be bypassed by the async path, so these programs run the sync way (in
    worker threads) instead.
    """
    lm = settings.current().lm
    if lm is not None and _overrides_sync_call(type(lm)):
        return True
    if type(program) is Predict and not _holds_modules(program):
        lms = [program.lm]  # a plain Predict: its own LM is the only other one
    else:
        lms = []
        named = getattr(program, "named_predictors", None)
        if callable(named):
            try:
                lms = [getattr(p, "lm", None) for _, p in named()]
            except Exception:  # a user object with an unusual named_predictors
                pass
    return any(lm is not None and _overrides_sync_call(type(lm)) for lm in lms)


def _setting(name: str, default: Any) -> Any:
    value = getattr(settings.current(), name, None)
    return default if value is None else value


@dataclass
class RunOutcome(Generic[R]):
    """What a run produced: ``results[i]`` is ``None`` where item ``i`` failed or never ran."""

    results: list[R | None]
    errors: dict[int, BaseException] = field(default_factory=dict)
    completed: int = 0
    interrupted: bool = False

    @property
    def failed_indices(self) -> list[int]:
        return sorted(self.errors)


class Executor(Generic[T, R]):
    """Bounded-concurrency runner with DSPy's ``max_errors`` and traceback-logging rules.

    ``on_result(index, result)`` is called on the loop after each success (progress bars);
    ``on_error(index, error)`` after each failure.
    """

    def __init__(
        self,
        *,
        num_threads: int | None = None,
        max_errors: int | None = None,
        provide_traceback: bool | None = None,
        timeout: float | None = None,
        on_result: Callable[[int, R], None] | None = None,
        on_error: Callable[[int, BaseException], None] | None = None,
    ) -> None:
        self.num_threads = int(num_threads or _setting("num_threads", DEFAULT_NUM_THREADS))
        if self.num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads!r}")
        self.max_errors = int(
            _setting("max_errors", DEFAULT_MAX_ERRORS) if max_errors is None else max_errors
        )
        self.provide_traceback = bool(
            _setting("provide_traceback", False) if provide_traceback is None else provide_traceback
        )
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.timeout = timeout
        self.on_result = on_result
        self.on_error = on_error
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = False
        self._cancelled_by_errors = False
        self._interrupted = False

    # ------------------------------------------------------------------ entry points
    def run(self, fn: Callable[[T], Awaitable[R]], items: Sequence[T]) -> RunOutcome[R]:
        """Sync entry: runs on this thread's loop; Ctrl-C (main thread) stops the run cleanly."""
        with self._sigint_handler():
            outcome = run_sync(self.arun(fn, items))
        return outcome

    async def arun(self, fn: Callable[[T], Awaitable[R]], items: Sequence[T]) -> RunOutcome[R]:
        """Run ``fn`` over ``items``; raises ``ExecutionCancelled`` when ``max_errors`` is hit."""
        outcome: RunOutcome[R] = RunOutcome(results=[None] * len(items))
        self._loop = asyncio.get_running_loop()
        queue: Iterator[tuple[int, T]] = iter(enumerate(items))
        workers = min(self.num_threads, len(items))
        self._tasks = [
            asyncio.create_task(self._worker(fn, queue, outcome)) for _ in range(workers)
        ]
        if self._interrupted:  # Ctrl-C arrived before the loop started
            self.interrupt()
        try:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        except asyncio.CancelledError:
            # the caller's task was cancelled: stop our workers before propagating
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            raise
        finally:
            self._loop = None
        outcome.interrupted = self._interrupted
        if self._cancelled_by_errors:
            logger.warning("Execution cancelled due to errors or interruption.")
            raise ExecutionCancelled(
                "Execution cancelled due to errors or interruption.",
                errors=len(outcome.errors),
                max_errors=self.max_errors,
            )
        return outcome

    def interrupt(self) -> None:
        """Stop taking items and cancel the ones in flight (call on the loop's thread)."""
        self._interrupted = True
        self._stop = True
        for task in self._tasks:
            task.cancel()

    # ------------------------------------------------------------------ internals
    async def _worker(
        self,
        fn: Callable[[T], Awaitable[R]],
        queue: Iterator[tuple[int, T]],
        outcome: RunOutcome[R],
    ) -> None:
        for index, item in queue:
            if self._stop:
                return
            try:
                if self.timeout is None:
                    value = await fn(item)
                else:
                    value = await self._with_deadline(fn, item)
            except asyncio.CancelledError:
                if self._stop:
                    return
                raise
            except Exception as exc:
                self._record_error(outcome, index, item, exc)
            else:
                outcome.results[index] = value
                outcome.completed += 1
                if self.on_result is not None:
                    self.on_result(index, value)

    async def _with_deadline(self, fn: Callable[[T], Awaitable[R]], item: T) -> R:
        assert self.timeout is not None
        try:
            async with asyncio.timeout(self.timeout):
                return await fn(item)
        except TimeoutError as exc:
            raise ExampleTimeout(
                f"the item did not finish within its deadline of {self.timeout} s",
                timeout=self.timeout,
            ) from exc

    def _record_error(
        self, outcome: RunOutcome[R], index: int, item: T, exc: BaseException
    ) -> None:
        outcome.errors[index] = exc
        if self.provide_traceback:
            tb = "".join(traceback.format_exception(exc))
            logger.error(f"Error for {item}: {exc}\n{tb}")
        else:
            logger.error(f"Error for {item}: {exc}. Set `provide_traceback=True` for traceback.")
        if self.on_error is not None:
            self.on_error(index, exc)
        if len(outcome.errors) >= self.max_errors and not self._stop:
            self._cancelled_by_errors = True
            self._stop = True
            current = asyncio.current_task()
            for task in self._tasks:
                if task is not current:
                    task.cancel()

    @contextlib.contextmanager
    def _sigint_handler(self) -> Iterator[None]:
        """While a sync run owns the main thread, Ctrl-C means: stop this run cleanly."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.getsignal(signal.SIGINT)

        def handler(signum: int, frame: Any) -> None:
            logger.warning("SIGINT received. Cancelling.")
            self._interrupted = True
            loop = self._loop
            if loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(self.interrupt)

        try:
            signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main interpreter
            yield
            return
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)
