"""``Ensemble``: one program that runs several and reduces their outputs."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from dspex.errors import OptimizerError
from dspex.primitives.module import Module
from dspex.teleprompt.teleprompt import Teleprompter

__all__ = ["Ensemble", "EnsembledProgram"]


class EnsembledProgram(Module):
    """Runs ``programs`` (a random ``size`` of them if set) and applies ``reduce_fn``."""

    def __init__(
        self,
        programs: Sequence[Any],
        reduce_fn: Callable[[list[Any]], Any] | None = None,
        size: int | None = None,
    ) -> None:
        super().__init__()
        self.programs = list(programs)
        self.reduce_fn = reduce_fn
        self.size = size

    def _chosen(self) -> list[Any]:
        return random.sample(self.programs, self.size) if self.size else self.programs

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        outputs = [program(*args, **kwargs) for program in self._chosen()]
        return self.reduce_fn(outputs) if self.reduce_fn else outputs


class Ensemble(Teleprompter):
    """``compile(programs)`` -> an :class:`EnsembledProgram` (``reduce_fn``: e.g. ``majority``)."""

    def __init__(
        self,
        *,
        reduce_fn: Callable[[list[Any]], Any] | None = None,
        size: int | None = None,
        deterministic: bool = False,
    ) -> None:
        if deterministic:
            raise OptimizerError("TODO: Implement example hashing for deterministic ensemble.")
        if size is not None and size < 1:
            raise OptimizerError(f"Ensemble size must be a positive integer, got {size!r}")
        self.reduce_fn = reduce_fn
        self.size = size
        self.deterministic = deterministic

    def compile(self, programs: Sequence[Any]) -> EnsembledProgram:  # type: ignore[override]
        programs = list(programs)
        if self.size is not None and self.size > len(programs):
            raise OptimizerError(
                f"Ensemble size {self.size} is larger than the {len(programs)} programs given"
            )
        return EnsembledProgram(programs, self.reduce_fn, self.size)
