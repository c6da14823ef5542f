"""What ``Evaluate`` shows and writes: the running-score progress bar, the results table
(pandas/HTML when pandas is installed, a rich table otherwise) and CSV/JSON rows.

Row shapes follow DSPy: a dict-like prediction is merged with its example (clashing keys
become ``example_<k>`` / ``pred_<k>``), anything else lands in a ``prediction`` column; the
metric's column is named after the metric.
"""

from __future__ import annotations

import csv
import json
import sys
import types
from collections.abc import Callable, Iterable
from typing import Any

__all__ = [
    "CountProgress",
    "ScoreProgress",
    "merge_dicts",
    "metric_name",
    "prediction_is_dictlike",
    "print_rich_table",
    "result_rows",
    "truncate_cell",
    "write_csv",
    "write_json",
]


def metric_name(metric: Callable[..., Any]) -> str:
    """A plain function's ``__name__``, else the metric object's class name (DSPy's rule)."""
    if isinstance(metric, types.FunctionType):
        return metric.__name__
    return type(metric).__name__


def prediction_is_dictlike(prediction: Any) -> bool:
    return hasattr(prediction, "items") and callable(prediction.items)


def _as_dict(value: Any) -> Any:
    return value.toDict() if hasattr(value, "toDict") else value


def merge_dicts(d1: Any, d2: Any) -> dict[str, Any]:
    """Merge an example and a prediction; a key in both becomes ``example_k`` and ``pred_k``."""
    left, right = _as_dict(d1), _as_dict(d2)
    merged: dict[str, Any] = {}
    for key, value in left.items():
        merged[f"example_{key}" if key in right else key] = value
    for key, value in right.items():
        merged[f"pred_{key}" if key in left else key] = value
    return merged


def result_rows(results: Iterable[tuple[Any, Any, Any]], name: str) -> list[dict[str, Any]]:
    """One dict per ``(example, prediction, score)``; the score under the metric's name."""
    rows = []
    for example, prediction, score in results:
        if prediction_is_dictlike(prediction):
            row = merge_dicts(example, prediction)
        else:
            row = example.toDict() | {"prediction": prediction}
        rows.append(row | {name: score})
    return rows


def truncate_cell(content: Any) -> Any:
    """Cut a cell's text to 25 words (``...`` appended); short content is returned unchanged."""
    words = str(content).split()
    if len(words) > 25:
        return " ".join(words[:25]) + "..."
    return content


def format_score(value: Any) -> str:
    if isinstance(value, float):
        return f"✔️ [{value:.3f}]"
    return "" if value is None else f"✔️ [{value}]"


def write_csv(path: str, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0].keys()))
        writer.writeheader()
        writer.writerows(rows)


def write_json(path: str, rows: list[dict[str, Any]]) -> None:
    with open(path, "w") as handle:
        json.dump(rows, handle)


def print_rich_table(rows: list[dict[str, Any]], name: str, limit: int | None) -> None:
    """The results as a rich table on stdout (used when pandas is not installed)."""
    from rich.console import Console
    from rich.table import Table

    shown = rows if limit is None else rows[:limit]
    columns: list[str] = []
    for row in shown:
        columns.extend(k for k in row if k not in columns)
    table = Table(show_lines=False)
    for column in columns:
        table.add_column(column, style="bold green" if column == name else None)
    for row in shown:
        cells = [
            format_score(row.get(c)) if c == name else str(truncate_cell(row.get(c, "")))
            for c in columns
        ]
        table.add_row(*cells)
    console = Console(file=sys.stdout)
    console.print(table)
    if limit is not None and len(rows) > limit:
        console.print(f"... {len(rows) - limit} more rows not displayed ...")


class ScoreProgress:
    """A rich progress bar whose description is the running score, as DSPy's tqdm bar shows
    (``Average Metric: 3.00 / 4 (75.0%)``). A disabled one costs nothing."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled
        self._progress: Any = None
        self._task: Any = None
        self.score = 0.0
        self.done = 0

    def __enter__(self) -> ScoreProgress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(file=sys.stdout),
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(self._describe(), total=self.total)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def add(self, score: Any) -> None:
        """One more example finished with ``score`` (``None``: it failed, not counted)."""
        if score is not None:
            self.score += float(score)
            self.done += 1
        if self._progress is not None:
            self._progress.update(self._task, advance=1, description=self._describe())

    def fail(self) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=1)

    def _describe(self) -> str:
        pct = round(100 * self.score / self.done, 1) if self.done else 0
        return f"Average Metric: {self.score:.2f} / {self.done} ({pct}%)"


class CountProgress(ScoreProgress):
    """Progress as ``Processed 3 / 10 examples`` (``Parallel``'s bar in DSPy)."""

    def _describe(self) -> str:
        return f"Processed {self.done} / {self.total} examples"

    def add(self, score: Any) -> None:
        self.done += 1
        if self._progress is not None:
            self._progress.update(self._task, advance=1, description=self._describe())
