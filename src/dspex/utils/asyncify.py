"""``asyncify``: call a program from async code without blocking the event loop."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

from dspex import settings

__all__ = ["asyncify"]

_limits: dict[tuple[int, int], asyncio.Semaphore] = {}


def _limiter() -> asyncio.Semaphore:
    """At most ``async_max_workers`` sync programs run in threads at once (per event loop)."""
    size = settings.current().async_max_workers
    key = (id(asyncio.get_running_loop()), size)
    sem = _limits.get(key)
    if sem is None:
        sem = _limits[key] = asyncio.Semaphore(max(1, size))
    return sem


def asyncify(program: Any) -> Callable[..., Awaitable[Any]]:
    """An async function running ``program``: a module through its ``acall`` (native async
    when it has ``aforward``; a sync ``forward`` runs in a worker thread), any other callable
    in a worker thread. Threads are bounded by ``settings.async_max_workers``; the caller's
    settings context (``dspex.context``) applies inside.
    """
    from dspex.primitives.module import Module

    if isinstance(program, Module):
        return program.acall

    async def run(*args: Any, **kwargs: Any) -> Any:
        async with _limiter():
            return await asyncio.to_thread(functools.partial(program, *args, **kwargs))

    return run
