"""Module logic as generators of steps: decisions without I/O, driven sync or async.

A composite module (``BestOfN``, ``Refine``, ``ProgramOfThought``...) writes its control flow
once, as a generator that yields :class:`Step` objects and receives their results (or has their
exception thrown in). :func:`drive_sync` runs each step with ``step.run()``,
:func:`drive_async` with ``await step.arun()`` — the two share every decision.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

__all__ = ["CallModule", "Step", "Steps", "drive_async", "drive_sync"]

T = TypeVar("T")


class Step(Protocol):
    def run(self) -> Any: ...

    async def arun(self) -> Any: ...


Steps = Generator[Step, Any, T]


@dataclass(frozen=True, slots=True)
class CallModule:
    """Call ``module(*args, **kwargs)`` sync, or ``module.acall(*args, **kwargs)`` async.

    ``around`` (optional) is a context-manager factory entered around the call (e.g. a
    settings context) on both paths.
    """

    module: Any
    kwargs: dict[str, Any] = field(default_factory=dict)
    args: tuple[Any, ...] = ()
    around: Callable[[], Any] | None = None

    def run(self) -> Any:
        if self.around is None:
            return self.module(*self.args, **self.kwargs)
        with self.around():
            return self.module(*self.args, **self.kwargs)

    async def arun(self) -> Any:
        if self.around is None:
            return await self.module.acall(*self.args, **self.kwargs)
        with self.around():
            return await self.module.acall(*self.args, **self.kwargs)


def drive_sync(steps: Steps[T]) -> T:
    reply: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = steps.send(reply) if error is None else steps.throw(error)
        except StopIteration as done:
            result: T = done.value
            return result
        reply, error = None, None
        try:
            reply = step.run()
        except Exception as exc:
            error = exc


async def drive_async(steps: Steps[T]) -> T:
    reply: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = steps.send(reply) if error is None else steps.throw(error)
        except StopIteration as done:
            result: T = done.value
            return result
        reply, error = None, None
        try:
            reply = await step.arun()
        except Exception as exc:
            error = exc
