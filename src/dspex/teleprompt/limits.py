"""One bound on concurrent program runs, shared by the parts of an optimizer that overlap."""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["Limited", "default_threads"]


class Limited:
    """A program whose runs each wait for a slot of ``limiter`` (``Evaluate`` calls ``acall``)."""

    def __init__(self, program: Any, limiter: asyncio.Semaphore) -> None:
        self.program = program
        self.limiter = limiter

    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        async with self.limiter:
            return await self.program.acall(*args, **kwargs)


def default_threads() -> int:
    """``settings.num_threads`` when the settings carry it, else DSPy's default (8)."""
    from dspex.modules.executor import DEFAULT_NUM_THREADS, _setting

    return int(_setting("num_threads", DEFAULT_NUM_THREADS))
