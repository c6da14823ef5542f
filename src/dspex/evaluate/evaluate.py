"""``Evaluate``: score a program on a devset, natively and concurrently (DSPy 3.4.1's API).

The program runs through its ``acall`` on one event loop with at most ``num_threads`` examples
in flight; a plain sync callable (program or metric) runs in a worker thread so it never blocks
the loop (with ``num_threads=1`` everything runs in the caller's thread, as DSPy does). Sync
metric functions stay on the loop while they are quick and move to a thread the first time
one call takes longer than :data:`~dspex.modules.executor.INLINE_BUDGET`.

Differences from DSPy, all additive: ``timeout=`` gives each example a deadline (DSPy re-submits
stragglers after a hard-coded 120 s); Ctrl-C raises :class:`~dspex.errors.EvaluationInterrupted`
(a ``KeyboardInterrupt``, as DSPy) carrying the partial result; too many errors raise
:class:`~dspex.errors.ExecutionCancelled` (DSPy: a bare ``Exception`` with the same message);
the results table is a rich table when pandas is not installed; ``acall`` is the async form.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from dspex._sync import run_sync
from dspex.errors import EvaluationInterrupted
from dspex.evaluate import display
from dspex.modules.executor import (
    AsyncCaller,
    Executor,
    RunOutcome,
    async_entry,
    customized_sync_lm,
)
from dspex.primitives.example import Example
from dspex.primitives.prediction import Prediction
from dspex.utils.callback import with_callbacks

if TYPE_CHECKING:
    import pandas as pd

    from dspex.pool.fanout import FanOut

__all__ = [
    "Evaluate",
    "EvaluationResult",
    "display_dataframe",
    "is_in_ipython_notebook_environment",
]

logger = logging.getLogger(__name__)

Scored = tuple[Any, Any]  # (prediction, score)


class EvaluationResult(Prediction):
    """``score`` (a percentage, e.g. ``67.3``) and ``results``: ``(example, prediction, score)``
    per devset example."""

    def __init__(self, score: float, results: list[tuple[Any, Any, Any]]) -> None:
        super().__init__(score=score, results=results)

    def __repr__(self) -> str:
        return (
            f"EvaluationResult(score={self.score}, results=<list of {len(self.results)} results>)"
        )

    __str__ = __repr__


def is_in_ipython_notebook_environment() -> bool:
    """Best-effort check for a Jupyter kernel (tables are then shown as HTML)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return "IPKernelApp" in getattr(get_ipython(), "config", {})


def _ipython_display(obj: Any) -> None:
    """IPython's ``display`` in a notebook; ``print`` where IPython is not installed."""
    try:
        from IPython.display import display
    except ImportError:
        print(obj)
        return
    display(obj)


def _html(text: str) -> Any:
    try:
        from IPython.display import HTML
    except ImportError:
        return text
    return HTML(text)


def display_dataframe(df: pd.DataFrame, notebook: bool) -> None:
    """Show ``df``: rich HTML in a notebook, every row and column printed in a terminal."""
    import pandas as pd

    if notebook:
        pd.options.display.max_colwidth = 70
        _ipython_display(df)
    else:
        with pd.option_context("display.max_rows", None, "display.max_columns", None):
            print(df)


class Evaluate:
    """Score ``program`` on ``devset`` with ``metric``; see the module docstring.

    Callbacks (``dspex.configure(callbacks=[...])``) get ``on_evaluate_start`` / ``_end``
    around each run, and the program's module calls are its children (``ACTIVE_CALL_ID``).
    """

    _dspex_callback_kind = "evaluate"

    def __init__(
        self,
        *,
        devset: Sequence[Example],
        metric: Callable[..., Any] | None = None,
        num_threads: int | None = None,
        display_progress: bool = False,
        display_table: bool | int = False,
        max_errors: int | None = None,
        provide_traceback: bool | None = None,
        failure_score: float = 0.0,
        save_as_csv: str | None = None,
        save_as_json: str | None = None,
        timeout: float | None = None,
        backend: str | None = None,
        **kwargs: Any,
    ) -> None:
        from dspex.pool.fanout import check_backend

        if "return_outputs" in kwargs:
            raise ValueError(
                "`return_outputs` is no longer supported. Results are always returned inside "
                "the `results` field of the `EvaluationResult` object."
            )
        if kwargs:
            logger.warning("Evaluate ignores unknown arguments: %s", sorted(kwargs))
        self.devset = devset
        self.metric = metric
        self.num_threads = num_threads
        self.display_progress = display_progress
        self.display_table = display_table
        self.max_errors = max_errors
        self.provide_traceback = provide_traceback
        self.failure_score = failure_score
        self.save_as_csv = save_as_csv
        self.save_as_json = save_as_json
        self.timeout = timeout
        self.backend = check_backend(backend)
        self._backend_given = backend is not None  # else settings' fanout_backend decides

    # ------------------------------------------------------------------ entry points
    @with_callbacks
    def __call__(
        self,
        program: Any,
        metric: Callable[..., Any] | None = None,
        devset: Sequence[Example] | None = None,
        num_threads: int | None = None,
        display_progress: bool | None = None,
        display_table: bool | int | None = None,
        callback_metadata: dict[str, Any] | None = None,
        save_as_csv: str | None = None,
        save_as_json: str | None = None,
    ) -> EvaluationResult:
        run = _Run(
            self,
            program,
            metric,
            devset,
            num_threads,
            display_progress,
            display_table,
            callback_metadata,
            save_as_csv,
            save_as_json,
        )
        try:
            with run.progress:
                outcome = run.executor.run(run.process, run.devset)
        finally:
            run.close()
        return run.finish(outcome)

    @with_callbacks
    async def acall(
        self,
        program: Any,
        metric: Callable[..., Any] | None = None,
        devset: Sequence[Example] | None = None,
        num_threads: int | None = None,
        display_progress: bool | None = None,
        display_table: bool | int | None = None,
        callback_metadata: dict[str, Any] | None = None,
        save_as_csv: str | None = None,
        save_as_json: str | None = None,
    ) -> EvaluationResult:
        """The async form of ``__call__`` (runs on the caller's event loop)."""
        run = _Run(
            self,
            program,
            metric,
            devset,
            num_threads,
            display_progress,
            display_table,
            callback_metadata,
            save_as_csv,
            save_as_json,
        )
        try:
            with run.progress:
                outcome = await run.executor.arun(run.process, run.devset)
        finally:
            await run.aclose()
        return run.finish(outcome)

    # ------------------------------------------------------------------ tables (DSPy's names)
    @staticmethod
    def _prepare_results_output(
        results: list[tuple[Any, Any, Any]], metric_name: str
    ) -> list[dict[str, Any]]:
        return display.result_rows(results, metric_name)

    def _construct_result_table(
        self, results: list[tuple[Any, Any, Any]], metric_name: str
    ) -> pd.DataFrame:
        """The results as a pandas DataFrame, cells cut to 25 words (needs pandas)."""
        import pandas as pd

        df = pd.DataFrame(self._prepare_results_output(results, metric_name))
        df = (
            df.map(display.truncate_cell)
            if hasattr(df, "map")
            else df.applymap(display.truncate_cell)
        )
        return df.rename(columns={"correct": metric_name})

    def _display_result_table(
        self, result_df: pd.DataFrame, display_table: bool | int, metric_name: str
    ) -> None:
        if isinstance(display_table, bool):
            shown, hidden = result_df.copy(), 0
        else:
            shown, hidden = result_df.head(display_table).copy(), len(result_df) - display_table
        shown[metric_name] = shown[metric_name].apply(display.format_score)
        notebook = is_in_ipython_notebook_environment()
        display_dataframe(shown, notebook)
        if hidden > 0:
            message = f"... {hidden} more rows not displayed ..."
            if notebook:
                _ipython_display(_html(f"<div style='text-align:center'>{message}</div>"))
            else:
                print(message)


class _Run:
    """One evaluation: arguments resolved against the ``Evaluate`` defaults, the per-example
    step, and the result assembly shared by the sync and async entry points."""

    def __init__(
        self,
        ev: Evaluate,
        program: Any,
        metric: Callable[..., Any] | None,
        devset: Sequence[Example] | None,
        num_threads: int | None,
        display_progress: bool | None,
        display_table: bool | int | None,
        callback_metadata: dict[str, Any] | None,
        save_as_csv: str | None,
        save_as_json: str | None,
    ) -> None:
        self.ev = ev
        self.metric = metric if metric is not None else ev.metric
        self.devset = list(devset if devset is not None else ev.devset)
        if not self.devset:
            raise ValueError("devset must contain at least one example, got an empty devset.")
        if self.metric is None:
            raise ValueError("Evaluate needs a metric: pass metric= to Evaluate or to the call.")
        self.display_table = display_table if display_table is not None else ev.display_table
        self.save_as_csv = save_as_csv if save_as_csv is not None else ev.save_as_csv
        self.save_as_json = save_as_json if save_as_json is not None else ev.save_as_json
        if callback_metadata:
            logger.debug(f"Evaluate is called with callback metadata: {callback_metadata}")
        show = display_progress if display_progress is not None else ev.display_progress
        self.progress = display.ScoreProgress(len(self.devset), bool(show))
        threads = num_threads if num_threads is not None else ev.num_threads
        self.fan = _fan_out(ev, program, self.metric, threads, len(self.devset))
        self.executor: Executor[Example, Scored] = Executor(
            # fanned out: every example is submitted at once; the workers bound concurrency
            num_threads=threads if self.fan is None else len(self.devset),
            max_errors=ev.max_errors,
            provide_traceback=ev.provide_traceback,
            timeout=ev.timeout if self.fan is None else None,  # the workers apply it
            on_result=lambda _i, value: self.progress.add(value[1]),
            on_error=lambda _i, _e: self.progress.fail(),
        )
        sequential = self.executor.num_threads == 1
        self.call_program = async_entry(
            program, inline=sequential, sync=customized_sync_lm(program)
        )
        self.call_metric = AsyncCaller(self.metric, inline=sequential, adaptive=True)

    async def process(self, example: Example) -> Scored:
        if self.fan is not None:
            scored: Scored = await self.fan.submit(example)
            return scored
        prediction = await self.call_program(**example.inputs())
        score = await self.call_metric(example, prediction)
        return prediction, score

    def close(self) -> None:
        if self.fan is not None:
            run_sync(self.fan.drain())

    async def aclose(self) -> None:
        if self.fan is not None:
            await self.fan.drain()

    def finish(self, outcome: RunOutcome[Scored]) -> EvaluationResult:
        if outcome.interrupted:
            done = [(self.devset[i], *r) for i, r in enumerate(outcome.results) if r is not None]
            partial = _result(done) if done else None
            raise EvaluationInterrupted(
                f"evaluation interrupted after {len(done)} of {len(self.devset)} examples",
                partial=partial,
                completed=len(done),
                total=len(self.devset),
            )
        failure = (Prediction(), self.ev.failure_score)
        results = [
            (example, *(failure if r is None else r))
            for example, r in zip(self.devset, outcome.results, strict=True)
        ]
        ncorrect, ntotal = sum(score for *_, score in results), len(results)
        logger.info(f"Average Metric: {ncorrect} / {ntotal} ({round(100 * ncorrect / ntotal, 1)}%)")
        name = display.metric_name(self.metric)  # type: ignore[arg-type]
        if self.display_table:
            self._show_table(results, name)
        if self.save_as_csv:
            display.write_csv(self.save_as_csv, display.result_rows(results, name))
        if self.save_as_json:
            display.write_json(self.save_as_json, display.result_rows(results, name))
        return _result(results)

    def _show_table(self, results: list[tuple[Any, Any, Any]], name: str) -> None:
        table = self.display_table
        if importlib.util.find_spec("pandas") is not None:
            df = self.ev._construct_result_table(results, name)
            self.ev._display_result_table(df, table, name)
        else:
            limit = None if isinstance(table, bool) else int(table)
            display.print_rich_table(display.result_rows(results, name), name, limit)


def _fan_out(
    ev: Evaluate, program: Any, metric: Any, threads: int | None, total: int
) -> FanOut | None:
    """The fan-out of a ``backend=`` run, or of ``settings.fanout_backend`` when no backend
    was given (``None``: in process)."""
    from dspex import settings

    given = getattr(ev, "_backend_given", True)
    backend = ev.backend if given or ev.backend else settings.current().fanout_backend
    if backend is None:
        return None
    from dspex.pool.fanout import FanOut

    return FanOut(
        backend,
        "evaluate",
        program,
        metric,
        num_threads=threads,
        timeout=ev.timeout,
        total=total,
    )


def _result(results: list[tuple[Any, Any, Any]]) -> EvaluationResult:
    ncorrect = sum(score for *_, score in results)
    return EvaluationResult(score=round(100 * ncorrect / len(results), 2), results=results)
