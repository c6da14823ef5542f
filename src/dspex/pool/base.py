"""The interface every pool backend implements (the process pool here; Ray actors later).

Code above the pool (the DSPy bridge, the router) should depend on this protocol only, so a
distributed backend can replace :class:`~dspex.pool.Pool` without changing it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

__all__ = ["PoolBackend", "SessionBackend"]


@runtime_checkable
class SessionBackend(Protocol):
    """Stateful calls pinned to one worker (see :class:`dspex.pool.Session`)."""

    @property
    def id(self) -> str: ...

    async def call(self, method: str, /, *args: Any, **kwargs: Any) -> Any: ...

    def call_sync(self, method: str, /, *args: Any, **kwargs: Any) -> Any: ...

    def stream(self, method: str, /, *args: Any, **kwargs: Any) -> AsyncIterator[Any]: ...

    def register_callback(self, name: str, fn: Callable[..., Any]) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class PoolBackend(Protocol):
    """Run ``handler.method(*args, **kwargs)`` somewhere supervised; typed errors on failure."""

    name: str

    async def start(self) -> None: ...

    async def call(self, method: str, /, *args: Any, **kwargs: Any) -> Any: ...

    def call_sync(self, method: str, /, *args: Any, **kwargs: Any) -> Any: ...

    def stream(self, method: str, /, *args: Any, **kwargs: Any) -> AsyncIterator[Any]: ...

    def session(
        self,
        *,
        mode: Any = ...,
        ttl: float | None = ...,
        recipe: Callable[[Any], Awaitable[None]] | None = ...,
    ) -> SessionBackend: ...

    def register_callback(self, name: str, fn: Callable[..., Any]) -> None: ...

    def stats(self) -> dict[str, Any]: ...

    async def close(self, *, cancel: bool = ..., timeout: float | None = ...) -> None: ...  # noqa: ASYNC109
