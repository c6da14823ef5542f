"""``ParallelExecutor``: a function over many items in worker threads (DSPy's executor).

Results keep the input order; a failed item gives ``None`` and is remembered in
``failed_indices``/``exceptions_map``; each failure is logged; reaching ``max_errors`` failures
cancels what has not started and raises. ``num_threads=1`` runs in the caller's thread. Each
worker runs in a copy of the caller's context (settings scopes, the active callback id).
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from dspex import settings

__all__ = ["BatchCancelled", "Outcomes", "ParallelExecutor"]

logger = logging.getLogger(__name__)


class BatchCancelled(Exception):
    """The run stopped after ``max_errors`` failures (DSPy raises a plain ``Exception``)."""


class Outcomes:
    """Results by index, the error budget and the straggler rule (no I/O: thread and async
    runners drive it). An item may run twice (a straggler's second attempt): the first
    attempt to finish settles it, later ones are ignored."""

    def __init__(self, size: int, max_errors: int, provide_traceback: bool) -> None:
        self.results: list[Any] = [None] * size
        self.exceptions_map: dict[int, BaseException] = {}
        self.max_errors = max_errors
        self.provide_traceback = provide_traceback
        self.cancel_jobs = threading.Event()
        self.done = 0
        self.size = size
        self.finished: set[int] = set()
        self.started: dict[int, float] = {}
        self.resubmitted: set[int] = set()
        self._lock = threading.Lock()

    @property
    def cancelled(self) -> bool:
        return self.cancel_jobs.is_set()

    def start(self, index: int) -> bool:
        """An attempt of item ``index`` starts; ``False`` when it need not run (settled, or
        the run was cancelled)."""
        with self._lock:
            if self.cancelled or index in self.finished:
                return False
            self.started.setdefault(index, time.monotonic())
            return True

    def _settle(self, index: int) -> bool:
        with self._lock:
            if index in self.finished:
                return False
            self.finished.add(index)
            self.done += 1
            return True

    def ok(self, index: int, value: Any) -> None:
        if self._settle(index):
            self.results[index] = value

    def stragglers(self, timeout: float, limit: int) -> list[int]:
        """Items to start a second attempt of, as DSPy's executor does: once at most
        ``limit`` items are unsettled, each one running for ``timeout`` seconds or more (once
        per item; ``timeout <= 0`` turns it off)."""
        if timeout <= 0:
            return []
        with self._lock:
            if self.cancelled or self.size - len(self.finished) > limit:
                return []
            now = time.monotonic()
            late = [
                index
                for index, began in self.started.items()
                if index not in self.finished
                and index not in self.resubmitted
                and now - began >= timeout
            ]
            self.resubmitted.update(late)
            return late

    def failed(self, index: int, item: Any, exc: BaseException) -> None:
        if not self._settle(index):
            return
        self.exceptions_map[index] = exc
        if self.provide_traceback:
            tb = "".join(traceback.format_exception(exc))
            logger.error(f"Error for {item}: {exc}\n{tb}")
        else:
            logger.error(f"Error for {item}: {exc}. Set `provide_traceback=True` for traceback.")
        if len(self.exceptions_map) >= self.max_errors:
            self.cancel_jobs.set()

    def check(self) -> None:
        if self.cancelled:
            logger.warning("Execution cancelled due to errors or interruption.")
            raise BatchCancelled("Execution cancelled due to errors or interruption.")


class ParallelExecutor:
    """Run ``function(item)`` for each item with ``num_threads`` threads (DSPy's API)."""

    def __init__(
        self,
        num_threads: int | None = None,
        max_errors: int | None = None,
        disable_progress_bar: bool = False,
        provide_traceback: bool | None = None,
        compare_results: bool = False,
        timeout: float = 120,
        straggler_limit: int = 3,
    ) -> None:
        now = settings.current()
        self.num_threads = now.num_threads if num_threads is None else num_threads
        self.max_errors = now.max_errors if max_errors is None else max_errors
        self.provide_traceback = (
            now.provide_traceback if provide_traceback is None else provide_traceback
        )
        self.disable_progress_bar = disable_progress_bar
        self.compare_results = compare_results
        self.timeout = timeout
        self.straggler_limit = straggler_limit
        self.failed_indices: list[int] = []
        self.exceptions_map: dict[int, BaseException] = {}
        self.error_count = 0
        self.cancel_jobs = threading.Event()

    def _run_pool(self, one: Callable[[int, Any], None], items: list[Any], out: Outcomes) -> None:
        """Items on ``num_threads`` threads; a straggler gets a second attempt (see
        :meth:`Outcomes.stragglers`) and the pool is not waited for once every item is
        settled (a slow first attempt finishes in the background, its result ignored)."""
        pool = ThreadPoolExecutor(self.num_threads, thread_name_prefix="dspex-parallel")

        def submit(index: int) -> Future[None]:
            return pool.submit(contextvars.copy_context().run, one, index, items[index])

        pending = {submit(i) for i in range(len(items))}
        poll = min(1.0, self.timeout) if self.timeout > 0 else None
        try:
            while pending and len(out.finished) < len(items):
                _, pending = wait(pending, timeout=poll, return_when=FIRST_COMPLETED)
                if out.cancelled:
                    for future in pending:
                        future.cancel()
                for index in out.stragglers(self.timeout, self.straggler_limit):
                    pending.add(submit(index))
        finally:
            # a straggler's slower attempt is not waited for once its item is settled
            pool.shutdown(wait=not (out.resubmitted and len(out.finished) == len(items)))

    def _update_progress(self, pbar: Any, nresults: int, ntotal: int) -> None:
        """Progress hook (no bar is drawn; subclasses/tests may observe it)."""

    def execute(self, function: Callable[[Any], Any], data: Sequence[Any]) -> list[Any]:
        items = list(data)
        out = Outcomes(len(items), self.max_errors, self.provide_traceback)
        self.cancel_jobs = out.cancel_jobs

        def one(index: int, item: Any) -> None:
            if not out.start(index):
                return
            try:
                value = function(item)
            except Exception as exc:
                out.failed(index, item, exc)
            else:
                out.ok(index, value)
            self._update_progress(None, out.done, len(items))

        if self.num_threads <= 1:
            for index, item in enumerate(items):
                if out.cancelled:
                    break
                one(index, item)
        else:
            self._run_pool(one, items, out)
        self.exceptions_map = out.exceptions_map
        self.failed_indices = sorted(out.exceptions_map)
        self.error_count = len(out.exceptions_map)
        out.check()
        return out.results
