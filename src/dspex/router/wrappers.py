"""Router behaviours as wrappers around an implementation, one concern each.

A wrapper is a :class:`~dspex.primitives.module.Module` that holds the module it wraps
(``inner``) and passes everything through — attributes, structure, state, save/load,
streaming — except the one thing it adds:

- :class:`MeasuredModule` times each call for ``routing_strategy="performance"``;
- :class:`FallbackModule` runs a DSPy module's calls natively while the ``dspy`` pool is
  unhealthy (``allow_fallback``);
- :class:`~dspex.router.compare.CompareModule` runs both implementations (compare mode).

Engine classes know nothing of these: the router (:func:`dspex.router.build`) applies them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar

from dspex.errors import PoolUnhealthy, UserError
from dspex.primitives.module import Module
from dspex.telemetry import events

__all__ = ["FallbackModule", "MeasuredModule", "ModuleWrapper", "unwrap"]


class ModuleWrapper(Module):
    """A module that stands for ``inner``: every attribute it does not own is ``inner``'s."""

    _own: ClassVar[frozenset[str]] = frozenset(
        {"inner", "kind", "callbacks", "history", "_compiled"}
    )
    inner: Module
    kind: str

    def __init__(self, kind: str, inner: Module) -> None:
        object.__setattr__(self, "inner", inner)
        object.__setattr__(self, "kind", kind)
        super().__init__()

    # attribute access: ``wrapper.demos``, ``wrapper.signature = ...`` reach the inner module
    def __getattr__(self, name: str) -> Any:
        inner = self.__dict__.get("inner")
        if inner is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._own or name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            setattr(self.inner, name, value)

    @property
    def implementation(self) -> str:
        return str(getattr(self.inner, "implementation", "native"))

    @property
    def _dspex_kind(self) -> str:
        return self.kind

    def __repr__(self) -> str:
        return repr(self.inner)

    # calling: the inner module's own call path (usage tracking, callbacks) runs once
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner(*args, **kwargs)

    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        return await self.inner.acall(*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self(*args, **kwargs)

    async def aforward(self, *args: Any, **kwargs: Any) -> Any:
        return await self.acall(*args, **kwargs)

    async def astream(self, **kwargs: Any) -> AsyncIterator[Any]:
        async for item in self.inner.astream(**kwargs):  # type: ignore[attr-defined]
            yield item

    # structure and state are the inner module's
    def named_parameters(self) -> list[tuple[str, Any]]:
        return self.inner.named_parameters()

    def named_predictors(self) -> list[tuple[str, Any]]:
        return self.inner.named_predictors()

    def set_lm(self, lm: Any) -> None:
        self.inner.set_lm(lm)

    def get_lm(self) -> Any:
        return self.inner.get_lm()

    def dump_state(self, json_mode: bool = True) -> dict[str, Any]:
        return self.inner.dump_state(json_mode=json_mode)

    def load_state(self, state: dict[str, Any]) -> Any:
        self.inner.load_state(state)
        return self


class MeasuredModule(ModuleWrapper):
    """Records each call's latency and failure for ``routing_strategy="performance"``."""

    _own = ModuleWrapper._own | {"measured_as"}

    def __init__(self, kind: str, inner: Module, implementation: str) -> None:
        super().__init__(kind, inner)
        self.measured_as = (kind, implementation)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from dspex.router.stats import measured_sync

        return measured_sync(self.measured_as, self.inner, args, kwargs)

    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        from dspex.router.stats import measured_async

        return await measured_async(self.measured_as, self.inner.acall(*args, **kwargs))


class FallbackModule(ModuleWrapper):
    """A DSPy module whose calls run on its native equivalent while the pool is unhealthy.

    The native module is built once, from the remote module's constructor arguments and last
    state, when a call first meets :class:`~dspex.errors.PoolUnhealthy` and ``allow_fallback``
    is on; the ``dspex.router.fallback`` event says so. Other errors pass through untouched.
    """

    _own = ModuleWrapper._own | {"_native"}

    def __init__(self, kind: str, inner: Module) -> None:
        super().__init__(kind, inner)
        self._native: Module | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._native is not None:
            return self._native(*args, **kwargs)
        try:
            return self.inner(*args, **kwargs)
        except PoolUnhealthy as exc:
            return self._fallback(exc)(*args, **kwargs)

    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        if self._native is not None:
            return await self._native.acall(*args, **kwargs)
        try:
            return await self.inner.acall(*args, **kwargs)
        except PoolUnhealthy as exc:
            return await self._fallback(exc).acall(*args, **kwargs)

    def _fallback(self, error: PoolUnhealthy) -> Module:
        from dspex import settings

        if not settings.current().allow_fallback:
            raise error
        try:
            native: Module = self.inner.native_from_recipe()  # type: ignore[attr-defined]
        except UserError:  # nothing to rebuild it from: the pool's error stands
            raise error from None
        lm = self.inner.get_lm()
        if lm is not None:
            native.set_lm(lm)
        self._native = native
        events.emit(
            "dspex.router.fallback",
            {},
            {
                "kind": self.kind,
                "from": "dspy",
                "to": "native",
                "when": "call",
                "reason": f"dspy pool unhealthy: {error.message}",
            },
        )
        return native


def unwrap(module: Any) -> Any:
    """The implementation inside any router wrappers (``module`` itself if it has none)."""
    while isinstance(module, ModuleWrapper):
        module = module.inner
    return module
