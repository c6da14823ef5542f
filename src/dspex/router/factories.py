"""``dspex.ReAct``, ``dspex.BestOfN``...: DSPy's names, built where the router says.

Each is a small class-like callable: ``dspex.ReAct("question -> answer", tools=[f])`` builds
the ``react`` kind natively if a native implementation is registered, else on DSPy in a
worker (``implementation=`` and the settings apply as for ``Predict``).
"""

from __future__ import annotations

from typing import Any

from dspex.errors import UserError
from dspex.primitives.module import Module
from dspex.router.kinds import _REGISTRY

__all__ = ["RoutedFactory", "factory"]


class RoutedFactory:
    """Builds one module kind through the router; ``isinstance`` checks its products."""

    def __init__(self, name: str, kind: str) -> None:
        self.__name__ = self.__qualname__ = name
        self.kind = kind
        self.__doc__ = f"DSPy's ``{name}``, routed: ``dspex.module({kind!r}, ...)``."

    def __repr__(self) -> str:
        return f"<routed dspex.{self.__name__} ({self.kind})>"

    def __call__(self, *args: Any, **kwargs: Any) -> Module:
        from dspex.router import module

        return module(self.kind, *args, **kwargs)

    def __instancecheck__(self, instance: object) -> bool:
        entry = _REGISTRY.entry(self.kind)
        if getattr(instance, "_dspex_kind", None) == self.kind:
            return True
        if entry.native is not None and isinstance(instance, _REGISTRY.native_class(self.kind)):
            return True
        return entry.dspy is not None and getattr(instance, "_type", None) == entry.dspy


def factory(name: str) -> RoutedFactory:
    entry = _REGISTRY.by_name(name)
    if entry is None:
        raise UserError(f"no module kind is published as dspex.{name}")
    return RoutedFactory(name, entry.kind)
