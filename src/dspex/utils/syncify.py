"""``syncify``: give an async-only program a sync ``forward`` (DSPy's helper)."""

from __future__ import annotations

from types import MethodType
from typing import Any

from dspex._sync import run_sync
from dspex.primitives.module import Module

__all__ = ["syncify"]


class _SyncWrapper(Module):
    """A module whose ``forward`` runs the wrapped program's ``aforward``."""

    def __init__(self, program: Any) -> None:
        super().__init__()
        self.program = program

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return run_sync(self.program.aforward(*args, **kwargs))


def syncify(program: Any, in_place: bool = True) -> Any:
    """Make ``program`` callable from sync code through its ``aforward``.

    ``in_place=True`` sets ``program.forward`` (returns the same object); ``in_place=False``
    returns a wrapper module holding it. The coroutine runs on this thread's reused event
    loop (or a helper thread's when called inside a running loop).
    """
    if not callable(getattr(program, "aforward", None)):
        from dspex.errors import UserError

        raise UserError(f"syncify needs a program with an aforward() method, got {program!r}")
    if not in_place:
        return _SyncWrapper(program)

    def forward(self: Any, *args: Any, **kwargs: Any) -> Any:
        return run_sync(self.aforward(*args, **kwargs))

    program.forward = MethodType(forward, program)
    return program
