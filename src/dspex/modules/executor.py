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
import importlib
import inspect
import logging
import signal
import threading
import time
import traceback
import types
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

try:
    import resource
except ImportError:  # not on Windows
    resource = None  # type: ignore[assignment]

from dspex import settings
from dspex._sync import run_sync
from dspex.errors import ExampleTimeout, ExecutionCancelled
from dspex.lm.base import BaseLM
from dspex.modules.predict import Predict
from dspex.primitives.calling import stoppable
from dspex.primitives.module import Module, Parameter

__all__ = [
    "DEFAULT_MAX_ERRORS",
    "DEFAULT_NUM_THREADS",
    "INLINE_BUDGET",
    "SLOW_CALLS",
    "AsyncCaller",
    "Executor",
    "RunOutcome",
    "async_entry",
    "configured_lm_customized",
    "customized_sync_lm",
    "lm_classes_may_customize",
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

_THREAD_USAGE: int | None = getattr(resource, "RUSAGE_THREAD", None) if resource else None
"""``getrusage``'s per-thread scope (Linux), or None where there is none."""


def _thread_usage() -> tuple[float, int]:
    """This thread's CPU seconds and voluntary context switches so far ((0, 0) if unknown)."""
    if _THREAD_USAGE is None or resource is None:
        return 0.0, 0
    usage = resource.getrusage(_THREAD_USAGE)
    return usage.ru_utime + usage.ru_stime, usage.ru_nvcsw


def blocked_the_loop(wall: float, cpu: float, waits: int, *, measured: bool) -> bool:
    """Whether a sync call that took ``wall`` seconds on the loop held it up by itself.

    Over :data:`INLINE_BUDGET` of wall time counts only if the call waited (``waits``: it gave
    up the CPU voluntarily: I/O, a sleep, a lock) or computed that long (``cpu``); a call that
    was merely preempted (a loaded machine) is not slow. Without per-thread usage
    (``measured=False``) wall time decides.
    """
    if wall <= INLINE_BUDGET:
        return False
    return not measured or waits > 0 or cpu > INLINE_BUDGET


_raw_signal: Any = importlib.import_module("_signal")
"""The C functions under :mod:`signal` (its wrappers convert handlers to enums, raising and
catching a ``ValueError`` for every function handler: a cost paid on each sync run)."""
_NOT_INSTALLED: Any = object()


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
            acall if acall is not None and _is_coroutine_function(acall) else None
        )
        if self.async_fn is None and _is_coroutine_function(fn):
            self.async_fn = fn
        self.inline = inline
        self.adaptive = adaptive and not inline
        self.slow_calls = 0
        self.call: Callable[..., Awaitable[Any]] = self.async_fn or self.__call__
        """What to await: the async entry itself when there is one (no extra layer)."""

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.async_fn is not None:
            return await self.async_fn(*args, **kwargs)
        if self.inline:
            return self.fn(*args, **kwargs)
        if self.adaptive:
            start, (cpu, waits) = time.perf_counter(), _thread_usage()
            value = self.fn(*args, **kwargs)
            wall = time.perf_counter() - start
            if wall > INLINE_BUDGET:
                cpu_after, waits_after = _thread_usage()
                measured = _THREAD_USAGE is not None
                if blocked_the_loop(wall, cpu_after - cpu, waits_after - waits, measured=measured):
                    self.slow_calls += 1
                    self.adaptive = self.slow_calls < SLOW_CALLS  # it blocks: use a thread
            return value
        return await asyncio.to_thread(self.fn, *args, **kwargs)


def async_entry(
    fn: Callable[..., Any], *, inline: bool, sync: bool = False
) -> Callable[..., Awaitable[Any]]:
    """What a fan-out awaits to call ``fn``: its async ``acall`` itself when it has one (no
    :class:`AsyncCaller` in between), else an :class:`AsyncCaller`'s call."""
    if not sync:
        acall = getattr(fn, "acall", None)
        if acall is not None and _is_coroutine_function(acall):
            entry: Callable[..., Awaitable[Any]] = acall
            return entry
    return AsyncCaller(fn, inline=inline, sync=sync).call


def _is_coroutine_function(fn: Any) -> bool:
    """``inspect.iscoroutinefunction``, answered straight from the code flags for a method
    bound to a plain function (every module's ``acall``)."""
    if type(fn) is types.MethodType and type(fn.__func__) is types.FunctionType:
        return bool(fn.__func__.__code__.co_flags & inspect.CO_COROUTINE)
    return inspect.iscoroutinefunction(fn)


def _defined_in(cls: type, name: str) -> type | None:
    return next((klass for klass in cls.__mro__ if name in klass.__dict__), None)


_PLAIN = frozenset({bool, int, float, str, type(None)})
_STRUCTURE = (Module, Parameter)
_MAY_HOLD = (Module, Parameter, list, tuple, dict)
_BUILTIN_CONTAINERS = frozenset({list, tuple, dict})
_RUNTIME_LISTS = frozenset({"history", "callbacks"})


def _overrides_sync_call(lm_type: type) -> bool:
    """Whether ``lm_type`` defines ``__call__`` below its ``acall``. Read from the class
    each time (no cache: a method assigned to a class later changes the answer); asked
    only when :func:`lm_classes_may_customize` says some class may."""
    sync_def, async_def = _defined_in(lm_type, "__call__"), _defined_in(lm_type, "acall")
    return (
        sync_def is not None
        and async_def is not None
        and sync_def is not async_def
        and issubclass(sync_def, async_def)
    )


def _holds_modules(module: Any) -> bool:
    """Whether any attribute of ``module`` is (or lists) a module or parameter.

    ``history`` and ``callbacks`` are the runtime's own lists (LM call records, callback
    handlers), never sub-modules; ``history`` grows with every call, so it is not scanned.
    """
    for name, value in module.__dict__.items():
        kind = type(value)
        if kind in _BUILTIN_CONTAINERS:
            if not value or name in _RUNTIME_LISTS:
                continue  # empty (a fresh Predict's demos, config, traces, train)
            for item in value.values() if kind is dict else value:
                if isinstance(item, _STRUCTURE):
                    return True
        elif kind in _PLAIN or name in _RUNTIME_LISTS or isinstance(value, type):
            continue  # a class (a Predict's signature) is never a module or parameter
        elif isinstance(value, _MAY_HOLD):
            return True  # a module, parameter or container subclass: take the full walk
    return False


def lm_classes_may_customize(root: type | None = None) -> bool:
    """Whether any loaded LM class (``root``'s subclasses, default ``BaseLM``'s) may customize
    its sync ``__call__`` below its ``acall``: :func:`customized_sync_lm`'s question for every
    program at once, so a fan-out over programs none of which can use such a class asks
    nothing per program. Read live from the class tree on every call (nothing cached: a class
    defined or patched later is seen); its cost grows with the number of LM classes, not of
    programs.

    ``False`` is exact: such a class's ``__call__`` is defined by a class below the one
    defining ``acall`` and not beside an ``acall`` of its own, so the walk meets a class that
    defines ``__call__`` alone, or a class with a base outside the tree (a mixin) that
    defines either; ``True`` only means the per-program check must run. (A class registered
    with ``BaseLM.register`` is not a subclass and is not walked.)
    """
    top: type = BaseLM if root is None else root
    stack = [top]
    while stack:
        cls = stack.pop()
        own = cls.__dict__
        if "__call__" in own and "acall" not in own:
            return True
        bases = cls.__bases__
        if len(bases) > 1 and any(_mixin_defines_a_call(base, top) for base in bases):
            return True
        stack.extend(cls.__subclasses__())
    return False


def _mixin_defines_a_call(base: type, top: type) -> bool:
    """Whether ``base`` (one of an LM class's bases) brings a ``__call__`` or ``acall`` from
    outside the LM class tree under ``top``."""
    if issubclass(base, top):
        return False  # walked as a class of the tree itself
    return any(
        "__call__" in klass.__dict__ or "acall" in klass.__dict__
        for klass in base.__mro__
        if klass is not object
    )


def configured_lm_customized() -> bool:
    """Whether the configured LM (``settings.lm``) customizes its sync ``__call__`` (see
    :func:`customized_sync_lm`); a fan-out over many programs asks this once."""
    lm = settings.current().lm
    return lm is not None and _overrides_sync_call(type(lm))


def customized_sync_lm(program: Any, configured: bool | None = None) -> bool:
    """Whether an LM the program uses customizes its sync ``__call__`` below its ``acall``
    (a test double that sleeps or counts in ``__call__``, as DSPy users write them).

    DSPy's ``Evaluate``/``Parallel`` call programs synchronously, so such an override runs
    there; ours would be bypassed by the async path, so these programs run the sync way (in
    worker threads) instead. ``configured``: :func:`configured_lm_customized`'s answer when
    the caller already has it.
    """
    if configured is None:
        if not lm_classes_may_customize():
            return False
        configured = configured_lm_customized()
    if configured:
        return True
    if type(program) is Predict and not _holds_modules(program):
        lm = program.lm  # a plain Predict: its own LM is the only other one
        return lm is not None and _overrides_sync_call(type(lm))
    lms: list[Any] = []
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
        self._tasks: list[asyncio.Future[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ramp: asyncio.Handle | None = None  # a pending call to start more workers
        self._left = 0  # items no worker has taken yet
        self._live = 0  # workers not finished
        self._open = False
        self._idle: asyncio.Future[None] | None = None  # resolved when the last worker ends
        self._stop = False
        self._halt = threading.Event()  # set when the run stops its items (stoppable)
        self._cancelled_by_errors = False
        self._interrupted = False

    # ------------------------------------------------------------------ entry points
    def run(self, fn: Callable[[T], Awaitable[R]], items: Sequence[T]) -> RunOutcome[R]:
        """Sync entry: runs on this thread's loop; Ctrl-C (main thread) stops the run cleanly."""
        previous = self._install_sigint()
        try:
            return run_sync(self.arun(fn, items))
        finally:
            if previous is not _NOT_INSTALLED:
                _raw_signal.signal(signal.SIGINT, previous)

    async def arun(self, fn: Callable[[T], Awaitable[R]], items: Sequence[T]) -> RunOutcome[R]:
        """Run ``fn`` over ``items``; raises ``ExecutionCancelled`` when ``max_errors`` is hit."""
        outcome: RunOutcome[R] = RunOutcome(results=[None] * len(items))
        loop = self._loop = asyncio.get_running_loop()
        self._tasks = []
        self._left = len(items)
        self._live = 0
        self._open = True
        self._halt = threading.Event()
        self._idle = idle = loop.create_future()
        if items:
            with stoppable(self._halt):  # the workers' tasks (and their threads) inherit it
                self._start_workers(fn, iter(enumerate(items)), outcome, 1)
        else:
            idle.set_result(None)
        if self._interrupted:  # Ctrl-C arrived before the loop started
            self.interrupt()
        try:
            await idle
        except asyncio.CancelledError:
            # the caller's task was cancelled: stop our workers before propagating
            self._open = False
            self._cancel_workers()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            raise
        finally:
            self._open = False
            if self._ramp is not None:
                self._ramp.cancel()
                self._ramp = None
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
        self._cancel_workers()

    def _cancel_workers(self) -> None:
        """Cancel the workers but the calling one. Items whose sync ``forward`` runs in a
        worker thread (which cancelling cannot reach) are refused their next module call."""
        self._halt.set()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()

    # ------------------------------------------------------------------ internals
    # Workers start lazily: the first one runs alone, and the others (up to ``num_threads``)
    # start only once a worker has suspended with items still waiting (``_ramp`` is a
    # ``call_soon`` callback, so it runs only when the running worker yields to the loop).
    # Items that never suspend (an in-process LM) thus run in one task, with no idle workers
    # to create and collect; items that wait on I/O get the full width at their first wait.

    def _start_workers(
        self,
        fn: Callable[[T], Awaitable[R]],
        queue: Iterator[tuple[int, T]],
        outcome: RunOutcome[R],
        count: int,
    ) -> None:
        assert self._loop is not None
        for _ in range(count):
            task = self._loop.create_task(self._worker(fn, queue, outcome))
            self._live += 1
            self._tasks.append(task)
            task.add_done_callback(self._worker_done)

    def _widen(
        self,
        fn: Callable[[T], Awaitable[R]],
        queue: Iterator[tuple[int, T]],
        outcome: RunOutcome[R],
    ) -> None:
        self._ramp = None
        if self._open and not self._stop:
            self._start_workers(fn, queue, outcome, min(self.num_threads - self._live, self._left))
        self._settle()

    def _worker_done(self, task: asyncio.Future[None]) -> None:
        self._live -= 1
        self._settle()

    def _settle(self) -> None:
        """Resolve ``_idle`` once no worker runs and none is about to start."""
        idle = self._idle
        if self._live == 0 and self._ramp is None and idle is not None and not idle.done():
            idle.set_result(None)

    async def _worker(
        self,
        fn: Callable[[T], Awaitable[R]],
        queue: Iterator[tuple[int, T]],
        outcome: RunOutcome[R],
    ) -> None:
        for index, item in queue:
            if self._stop:
                return
            self._left -= 1
            if self._left and self._ramp is None and self._live < self.num_threads:
                assert self._loop is not None
                self._ramp = self._loop.call_soon(self._widen, fn, queue, outcome)
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
            self._cancel_workers()

    def _install_sigint(self) -> Any:
        """While a sync run owns the main thread, Ctrl-C means: stop this run cleanly.
        Returns the handler to restore, or :data:`_NOT_INSTALLED`."""
        if threading.current_thread() is not threading.main_thread():
            return _NOT_INSTALLED

        def handler(signum: int, frame: Any) -> None:
            logger.warning("SIGINT received. Cancelling.")
            self._interrupted = True
            loop = self._loop
            if loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(self.interrupt)

        try:
            return _raw_signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main interpreter
            return _NOT_INSTALLED
