"""LM-call budgets for optimizers: count the calls of each phase, stop cleanly when spent.

A :class:`CallBudget` is a callback (``on_lm_start``) added to the settings for the duration
of a compile. Optimizers check :attr:`CallBudget.spent` between units of work (a training
example, a candidate program) and stop starting new ones once it is; calls already in flight
finish, so a run may overshoot ``max_lm_calls`` by at most the calls in flight. Cache hits
count as calls (the LM is called; the cache answers).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dspex import settings
from dspex.errors import OptimizerError
from dspex.utils.callback import BaseCallback

__all__ = ["CallBudget", "counting"]


class CallBudget(BaseCallback):
    """Counts LM calls per phase; ``spent`` once ``max_lm_calls`` were made (``None``: never)."""

    def __init__(self, max_lm_calls: int | None = None) -> None:
        if max_lm_calls is not None and (not isinstance(max_lm_calls, int) or max_lm_calls < 1):
            raise OptimizerError(f"max_lm_calls must be a positive integer, got {max_lm_calls!r}")
        self.max_lm_calls = max_lm_calls
        self.phase = "compile"
        self.calls: dict[str, int] = {}

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    @property
    def spent(self) -> bool:
        return self.max_lm_calls is not None and self.total >= self.max_lm_calls

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self.calls[self.phase] = self.calls.get(self.phase, 0) + 1


@contextmanager
def counting(budget: CallBudget) -> Iterator[CallBudget]:
    """Count every LM call made in this block (and the tasks it starts) into ``budget``."""
    current = settings.current().callbacks
    with settings.context(callbacks=[*current, budget]):
        yield budget
