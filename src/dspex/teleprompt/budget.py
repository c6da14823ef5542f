"""LM-call and cost budgets for optimizers, and the per-phase summary of what a compile spent.

A :class:`CallBudget` is installed for the duration of a compile (:func:`counting`): a
callback (``on_lm_start``/``on_lm_end``) counts every LM call, and a usage tracker (the
``settings.usage_tracker`` LM calls report their token usage to) sees the calls that were
paid for (a cache hit reports no usage). Each call is booked to the phase in force where it
was made (:meth:`CallBudget.in_phase`, a context variable, so concurrent tasks each keep
their own phase).

Optimizers check :attr:`CallBudget.spent` between units of work (a training example, a
candidate program, a depth) and stop starting new ones once it is; calls already in flight
finish, so a run may overshoot ``max_lm_calls``/``max_cost`` by the calls in flight.
``max_lm_calls`` counts cache hits too (the LM is called; the cache answers); ``max_cost``
counts only paid calls, priced from litellm's model price table (the table DSPy's cost
figures come from) or from :func:`register_price`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import Any

from dspex import settings
from dspex.errors import OptimizerError
from dspex.lm.usage import UsageTracker, current_tracker
from dspex.utils.callback import BaseCallback

__all__ = [
    "CallBudget",
    "PhaseStats",
    "RunSummary",
    "counting",
    "price_of",
    "register_price",
]

_NO_PHASES: Mapping[int, str] = MappingProxyType({})
_PHASES: ContextVar[Mapping[int, str]] = ContextVar("dspex_optimizer_phase", default=_NO_PHASES)
"""The phase each active budget books calls to, by ``id(budget)`` (per task)."""


# ---------------------------------------------------------------------- prices
_prices: dict[str, tuple[float, float]] = {}
_table: dict[str, Any] | None = None
_table_lock = threading.Lock()


def register_price(model: str, *, prompt: float, completion: float) -> None:
    """USD per prompt token and per completion token for ``model`` (overrides litellm's)."""
    if prompt < 0 or completion < 0:
        raise OptimizerError(f"prices must be >= 0, got prompt={prompt}, completion={completion}")
    _prices[model] = (float(prompt), float(completion))


def _litellm_table() -> dict[str, Any]:
    """litellm's bundled price table, read as JSON (litellm itself is never imported)."""
    global _table
    if _table is None:
        with _table_lock:
            if _table is None:
                import importlib.util
                from pathlib import Path

                import orjson

                table: dict[str, Any] = {}
                spec = importlib.util.find_spec("litellm")
                if spec is not None and spec.origin is not None:
                    path = Path(spec.origin).parent / "model_prices_and_context_window_backup.json"
                    if path.is_file():
                        loaded = orjson.loads(path.read_bytes())
                        table = loaded if isinstance(loaded, dict) else {}
                _table = table
    return _table


def price_of(model: str) -> tuple[float, float] | None:
    """``(usd_per_prompt_token, usd_per_completion_token)`` for ``model``, or ``None``.

    :func:`register_price` first, then litellm's table under the full name
    (``openai/gpt-4o-mini``) and without the provider prefix (``gpt-4o-mini``).
    """
    if model in _prices:
        return _prices[model]
    table = _litellm_table()
    for name in (model, model.split("/", 1)[-1]):
        entry = table.get(name)
        if isinstance(entry, dict) and "input_cost_per_token" in entry:
            return (
                float(entry.get("input_cost_per_token") or 0.0),
                float(entry.get("output_cost_per_token") or 0.0),
            )
    return None


# ---------------------------------------------------------------------- summary
@dataclass
class PhaseStats:
    """What one phase of a compile spent. ``cost`` is priced when read (the price table is
    loaded only then), from the paid tokens of each model."""

    lm_calls: int = 0
    """LM calls made (cache hits included)."""
    cache_hits: int = 0
    """Calls answered without a paid request (no usage reported)."""
    errors: int = 0
    """Calls that raised."""
    paid_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    models: dict[str, list[int]] = field(default_factory=dict)
    """Per model: ``[paid calls, prompt tokens, completion tokens]``."""

    @property
    def cost(self) -> float:
        """USD for the paid calls of models with a known price (see :func:`price_of`)."""
        total = 0.0
        for model, (_, prompt, completion) in self.models.items():
            price = price_of(model)
            if price is not None:
                total += prompt * price[0] + completion * price[1]
        return total

    @property
    def unpriced_calls(self) -> int:
        """Paid calls whose model has no known price (not in ``cost``)."""
        return sum(v[0] for model, v in self.models.items() if price_of(model) is None)

    def copy(self) -> PhaseStats:
        fields = {**asdict(self), "models": {m: list(v) for m, v in self.models.items()}}
        return PhaseStats(**fields)

    def add(self, other: PhaseStats) -> None:
        for name, value in asdict(other).items():
            if name != "models":
                setattr(self, name, getattr(self, name) + value)
        for model, counts in other.models.items():
            mine = self.models.setdefault(model, [0, 0, 0])
            for i, count in enumerate(counts):
                mine[i] += count

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "cost": self.cost, "unpriced_calls": self.unpriced_calls}


@dataclass
class RunSummary:
    """LM calls, cache hits, tokens and cost per phase of one compile (``compiled.run_summary``).

    ``stopped`` names the budget that ended the run early (``"max_lm_calls"``,
    ``"max_cost"``), else ``None``; ``resumed`` holds the checkpoints a resumed run restored.
    """

    optimizer: str
    phases: dict[str, PhaseStats] = field(default_factory=dict)
    stopped: str | None = None
    resumed: list[str] = field(default_factory=list)

    @property
    def total(self) -> PhaseStats:
        total = PhaseStats()
        for stats in self.phases.values():
            total.add(stats)
        return total

    def to_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer,
            "phases": {name: stats.to_dict() for name, stats in self.phases.items()},
            "total": self.total.to_dict(),
            "stopped": self.stopped,
            "resumed": list(self.resumed),
        }

    def __rich__(self) -> Any:
        from rich.table import Table

        title = f"{self.optimizer} run summary"
        if self.stopped:
            title += f" (stopped: {self.stopped})"
        table = Table(title=title)
        table.add_column("phase", no_wrap=True)
        for column in ("LM calls", "cache hits", "errors", "prompt tok", "compl tok"):
            table.add_column(column, justify="right")
        table.add_column("cost (USD)", justify="right")
        rows = [*self.phases.items(), ("total", self.total)]
        for index, (name, s) in enumerate(rows):
            cost = f"{s.cost:.6f}" + ("*" if s.unpriced_calls else "")
            table.add_row(
                name,
                str(s.lm_calls),
                str(s.cache_hits),
                str(s.errors),
                str(s.prompt_tokens),
                str(s.completion_tokens),
                cost,
                end_section=index == len(rows) - 2,
            )
        if self.total.unpriced_calls:
            table.caption = (
                "* some paid calls have no known price (dspex.teleprompt.register_price)"
            )
        return table

    def __str__(self) -> str:
        import io

        from rich.console import Console

        console = Console(width=100, file=io.StringIO(), color_system=None)
        console.print(self)
        text: str = console.file.getvalue()  # type: ignore[attr-defined]
        return text.rstrip()

    def print(self) -> None:
        """Print the summary table to the terminal (rich)."""
        from rich.console import Console

        Console().print(self)


# ---------------------------------------------------------------------- budget
class CallBudget(BaseCallback):
    """Counts LM calls per phase; ``spent`` once ``max_lm_calls`` calls were made or
    ``max_cost`` USD was paid (``None``: no limit)."""

    _dspex_callback_kinds = frozenset({"lm"})  # it counts LM calls only

    def __init__(self, max_lm_calls: int | None = None, max_cost: float | None = None) -> None:
        if max_lm_calls is not None and (
            isinstance(max_lm_calls, bool) or not isinstance(max_lm_calls, int) or max_lm_calls < 1
        ):
            raise OptimizerError(f"max_lm_calls must be a positive integer, got {max_lm_calls!r}")
        if max_cost is not None and (
            isinstance(max_cost, bool) or not isinstance(max_cost, int | float) or max_cost <= 0
        ):
            raise OptimizerError(f"max_cost must be a positive number (USD), got {max_cost!r}")
        self.max_lm_calls = max_lm_calls
        self.max_cost = None if max_cost is None else float(max_cost)
        self.stats: dict[str, PhaseStats] = {}
        self._phase = "compile"
        self._lock = threading.Lock()

    # phases ------------------------------------------------------------
    @property
    def phase(self) -> str:
        """The phase calls made here are booked to."""
        return _PHASES.get().get(id(self), self._phase)

    @phase.setter
    def phase(self, name: str) -> None:
        """Set the phase of this task (and the default for tasks without one)."""
        self._phase = name
        phases = _PHASES.get()
        if id(self) in phases:
            _PHASES.set({**phases, id(self): name})

    @contextmanager
    def in_phase(self, name: str) -> Iterator[PhaseStats]:
        """Book the calls made in this block (and the tasks it starts) to phase ``name``."""
        token = _PHASES.set({**_PHASES.get(), id(self): name})
        try:
            yield self._stats(name)
        finally:
            _PHASES.reset(token)

    def _stats(self, name: str) -> PhaseStats:
        stats = self.stats.get(name)
        if stats is None:
            with self._lock:
                stats = self.stats.setdefault(name, PhaseStats())
        return stats

    def reset(self) -> None:
        """Forget what was counted (a budget counts one compile: :class:`~dspex.teleprompt.run.Run`
        resets it when the compile starts)."""
        with self._lock:
            self.stats = {}

    # totals ------------------------------------------------------------
    @property
    def calls(self) -> dict[str, int]:
        """LM calls made, by phase (phases with calls only)."""
        return {name: s.lm_calls for name, s in self.stats.items() if s.lm_calls}

    @property
    def total(self) -> int:
        return sum(s.lm_calls for s in self.stats.values())

    @property
    def cost(self) -> float:
        """USD paid so far (prices the tokens: reads the price table on first use)."""
        with self._lock:
            phases = [s.copy() for s in self.stats.values()]
        return sum(s.cost for s in phases)

    @property
    def stopped_by(self) -> str | None:
        """The limit that is spent (``"max_lm_calls"``/``"max_cost"``), else ``None``."""
        if self.max_lm_calls is not None and self.total >= self.max_lm_calls:
            return "max_lm_calls"
        if self.max_cost is not None and self.cost >= self.max_cost:
            return "max_cost"
        return None

    @property
    def spent(self) -> bool:
        return self.stopped_by is not None

    def summary(self, optimizer: str) -> RunSummary:
        """A snapshot of the phases so far."""
        with self._lock:
            phases = {name: s.copy() for name, s in self.stats.items()}
        return RunSummary(optimizer, phases)

    # hooks --------------------------------------------------------------
    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        stats = self._stats(self.phase)
        with self._lock:
            stats.lm_calls += 1

    def on_lm_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        stats = self._stats(self.phase)
        with self._lock:
            if exception is not None:
                stats.errors += 1
            else:
                stats.cache_hits += 1  # a paid call takes this back in _paid (it comes first)

    def _paid(self, model: str, usage: Mapping[str, Any]) -> None:
        prompt = _int(usage.get("prompt_tokens"))
        completion = _int(usage.get("completion_tokens"))
        stats = self._stats(self.phase)
        with self._lock:
            stats.paid_calls += 1
            stats.cache_hits -= 1
            stats.prompt_tokens += prompt
            stats.completion_tokens += completion
            counts = stats.models.setdefault(model, [0, 0, 0])
            counts[0] += 1
            counts[1] += prompt
            counts[2] += completion

    def check_prices(self, *lms: Any) -> None:
        """With ``max_cost``: every LM given (``None`` skipped) must have a known price."""
        if self.max_cost is None:
            return
        for lm in lms:
            model = getattr(lm, "model", None)
            if isinstance(model, str) and price_of(model) is None:
                raise OptimizerError(
                    f"max_cost is set but no price is known for model {model!r}; "
                    "give one with dspex.teleprompt.register_price(model, prompt=..., "
                    "completion=...) (USD per token)"
                )


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


class _BudgetTracker(UsageTracker):
    """The usage tracker in force during a compile: books paid calls to the budget and hands
    every entry on to the tracker that was in force before (``track_usage()`` keeps working)."""

    def __init__(self, budget: CallBudget, parent: UsageTracker | None) -> None:
        super().__init__()
        self.budget = budget
        self.parent = parent

    def add_usage(self, lm: str, usage_entry: Mapping[str, Any]) -> None:
        self.budget._paid(lm, usage_entry)
        if self.parent is not None:
            self.parent.add_usage(lm, usage_entry)

    add = add_usage


@contextmanager
def counting(budget: CallBudget) -> Iterator[CallBudget]:
    """Count every LM call made in this block (and the tasks it starts) into ``budget``."""
    current = settings.current()
    tracker = _BudgetTracker(budget, current_tracker())
    with settings.context(callbacks=[*current.callbacks, budget], usage_tracker=tracker):
        yield budget
