"""What a pipeline run returns: one ``StepResult`` per step and the ``PipelineResult``."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dspex.primitives.prediction import Prediction

__all__ = ["PipelineResult", "StepResult", "total_tokens"]


def total_tokens(usage: Mapping[str, Mapping[str, Any]]) -> int:
    """Tokens over every model of a usage dict (``total_tokens``, else prompt + completion)."""
    total = 0
    for counts in usage.values():
        if "total_tokens" in counts:
            total += int(counts["total_tokens"])
        else:
            total += int(counts.get("prompt_tokens", 0)) + int(counts.get("completion_tokens", 0))
    return total


@dataclass(slots=True)
class StepResult:
    """One executed step: where it ran, how long it took, what it wrote, how it ended.

    ``name`` is the step's path (``"fanout/search"``, ``"answer_all[3]"``); ``status`` is
    ``"ok"``, ``"error"`` or ``"partial"`` (a composite step whose children partly failed
    under ``continue_on_error``). ``children`` are the results of a composite's sub-steps.
    """

    name: str
    kind: str
    implementation: str
    status: str = "ok"
    duration: float = 0.0
    attempts: int = 1
    outputs: dict[str, Any] = field(default_factory=dict)
    usage: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: BaseException | None = None
    children: list[StepResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def tokens(self) -> int:
        return total_tokens(self.usage)

    @property
    def depth(self) -> int:
        return self.name.count("/") + self.name.count("[")

    def walk(self) -> Iterator[StepResult]:
        """This result, then its children's, depth first."""
        yield self
        for child in self.children:
            yield from child.walk()

    def metrics(self) -> dict[str, Any]:
        return {
            "step": self.name,
            "kind": self.kind,
            "implementation": self.implementation,
            "status": self.status,
            "duration_ms": self.duration * 1e3,
            "tokens": self.tokens,
            "attempts": self.attempts,
            "error": None if self.error is None else str(self.error),
        }


@dataclass(slots=True)
class PipelineResult:
    """A finished run: the final ``state``, every step's result, and the recorded errors.

    Indexing reads the state (``result["answer"]``). ``errors`` is non-empty only under
    ``continue_on_error`` (otherwise the first error is raised); ``ok`` says it is empty.
    """

    name: str
    inputs: dict[str, Any]
    state: dict[str, Any]
    steps: list[StepResult]
    errors: list[BaseException]
    duration: float
    usage: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def outputs(self) -> dict[str, Any]:
        """The state fields the steps wrote (new or changed relative to the inputs)."""
        missing = object()
        return {
            k: v
            for k, v in self.state.items()
            if (self.inputs.get(k, missing) is not v and k not in self.inputs)
            or k not in self.inputs
        }

    @property
    def tokens(self) -> int:
        return total_tokens(self.usage)

    def __getitem__(self, key: str) -> Any:
        return self.state[key]

    def __contains__(self, key: object) -> bool:
        return key in self.state

    def get(self, key: str, default: Any = None) -> Any:
        return self.state.get(key, default)

    def walk(self) -> Iterator[StepResult]:
        """Every step result, nested ones included, in execution-tree order."""
        for step in self.steps:
            yield from step.walk()

    def metrics(self) -> list[dict[str, Any]]:
        """One row per step (nested steps included): duration, implementation, tokens..."""
        return [step.metrics() for step in self.walk()]

    def to_prediction(self) -> Prediction:
        from dspex.primitives.prediction import Prediction

        pred = Prediction(**self.state)
        pred.set_lm_usage(self.usage or None)
        return pred

    def table(self, title: str | None = None) -> Any:
        """A ``rich`` table of the steps: implementation, timing, tokens, status."""
        from rich.table import Table

        table = Table(title=title or f"pipeline {self.name!r}: {self.duration * 1e3:.1f} ms")
        for column, justify in (
            ("step", "left"),
            ("kind", "left"),
            ("implementation", "left"),
            ("ms", "right"),
            ("tokens", "right"),
            ("status", "left"),
        ):
            table.add_column(column, justify=justify)  # type: ignore[arg-type]
        for step in self.walk():
            label = "  " * step.depth + step.name.rsplit("/", 1)[-1]
            status = step.status if step.error is None else f"{step.status}: {step.error}"
            table.add_row(
                label,
                step.kind,
                step.implementation,
                f"{step.duration * 1e3:.2f}",
                str(step.tokens or ""),
                status[:60],
            )
        return table
