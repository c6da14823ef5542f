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
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

from dspex import settings

__all__ = ["BatchCancelled", "Outcomes", "ParallelExecutor"]

logger = logging.getLogger(__name__)


class BatchCancelled(Exception):
    """The run stopped after ``max_errors`` failures (DSPy raises a plain ``Exception``)."""


class Outcomes:
    """Results by index and the error budget (no I/O: thread and async runners drive it)."""

    def __init__(self, size: int, max_errors: int, provide_traceback: bool) -> None:
        self.results: list[Any] = [None] * size
        self.exceptions_map: dict[int, BaseException] = {}
        self.max_errors = max_errors
        self.provide_traceback = provide_traceback
        self.cancel_jobs = threading.Event()
        self.done = 0

    @property
    def cancelled(self) -> bool:
        return self.cancel_jobs.is_set()

    def ok(self, index: int, value: Any) -> None:
        self.results[index] = value
        self.done += 1

    def failed(self, index: int, item: Any, exc: BaseException) -> None:
        self.exceptions_map[index] = exc
        self.done += 1
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
        timeout: int = 120,
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

    def _update_progress(self, pbar: Any, nresults: int, ntotal: int) -> None:
        """Progress hook (no bar is drawn; subclasses/tests may observe it)."""

    def execute(self, function: Callable[[Any], Any], data: Sequence[Any]) -> list[Any]:
        items = list(data)
        out = Outcomes(len(items), self.max_errors, self.provide_traceback)
        self.cancel_jobs = out.cancel_jobs

        def one(index: int, item: Any) -> None:
            if out.cancelled:
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
            with ThreadPoolExecutor(self.num_threads, thread_name_prefix="dspex-parallel") as pool:
                futures = [
                    pool.submit(contextvars.copy_context().run, one, i, item)
                    for i, item in enumerate(items)
                ]
                for _done in as_completed(futures):
                    if out.cancelled:
                        for pending in futures:
                            pending.cancel()
        self.exceptions_map = out.exceptions_map
        self.failed_indices = sorted(out.exceptions_map)
        self.error_count = len(out.exceptions_map)
        out.check()
        return out.results
