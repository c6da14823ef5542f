"""``dspex.Predict``, ``dspex.ReAct``, ``dspex.BestOfN``...: DSPy's names, built by the router.

Each public name is a :class:`RoutedFactory` for one module kind: calling it is
``dspex.module(kind, ...)`` (native or a DSPy worker, as the router decides), and it behaves
like the class users expect from DSPy where that matters:

- ``isinstance(m, dspex.Predict)`` is true for whatever the router built for ``predict``
  (the native class, its DSPy stand-in, or a router wrapper);
- ``class MyPredict(dspex.Predict): ...`` subclasses the native engine class — a user's
  subclass is user code and always runs natively;
- class attributes (static helpers, methods) are the native class's, and patching one
  (``mock.patch.object(dspex.Predict, "forward", ...)``) patches the native class.
"""

from __future__ import annotations

from typing import Any

from dspex.errors import UserError
from dspex.primitives.module import Module
from dspex.router.kinds import _REGISTRY

__all__ = ["RoutedFactory", "factory"]

_ABSENT: Any = object()


class RoutedFactory:
    """Builds one module kind through the router; ``isinstance`` checks its products."""

    _OWN = frozenset({"__name__", "__qualname__", "kind", "__doc__", "_originals"})
    kind: str
    _originals: dict[str, Any]

    def __init__(self, name: str, kind: str) -> None:
        set_own = object.__setattr__
        set_own(self, "__name__", name)
        set_own(self, "__qualname__", name)
        set_own(self, "kind", kind)
        set_own(self, "_originals", {})
        set_own(self, "__doc__", f"DSPy's ``{name}``, routed: ``dspex.module({kind!r}, ...)``.")

    def __repr__(self) -> str:
        return f"<routed dspex.{self.__name__} ({self.kind})>"

    def __call__(self, *args: Any, **kwargs: Any) -> Module:
        from dspex.router import build

        return build(self.kind, *args, **kwargs)

    def _native(self) -> type | None:
        if _REGISTRY.entry(self.kind).native is None:
            return None
        cls: type = _REGISTRY.native_class(self.kind)
        return cls

    def __mro_entries__(self, bases: tuple[Any, ...]) -> tuple[type, ...]:
        native = self._native()
        if native is None:
            raise UserError(
                f"dspex.{self.__name__} has no native class to subclass; register one with "
                f"dspex.register_native({self.kind!r}, ...) or use dspex.dspy({self.__name__!r})"
            )
        return (native,)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        native = self._native()
        if native is None:
            raise AttributeError(f"dspex.{self.__name__} has no attribute {name!r}")
        return getattr(native, name)

    def __setattr__(self, name: str, value: Any) -> None:
        # patching a method (``mock.patch.object(dspex.Predict, "forward", ...)``) patches
        # the native class, as it would patch DSPy's class; deleting the patch (how mock and
        # monkeypatch undo it) puts the native class's own attribute back
        native = None if name in self._OWN else self._native()
        if native is None:
            object.__setattr__(self, name, value)
            return
        self._originals.setdefault(name, native.__dict__.get(name, _ABSENT))
        setattr(native, name, value)

    def __delattr__(self, name: str) -> None:
        native = None if name in self._OWN else self._native()
        if native is None:
            object.__delattr__(self, name)
            return
        original = self._originals.pop(name, _ABSENT)
        if original is _ABSENT:
            delattr(native, name)
        else:
            setattr(native, name, original)

    def __instancecheck__(self, instance: object) -> bool:
        entry = _REGISTRY.entry(self.kind)
        if getattr(instance, "_dspex_kind", None) == self.kind:
            return True
        if entry.native is not None and isinstance(instance, _REGISTRY.native_class(self.kind)):
            return True
        return entry.dspy is not None and getattr(instance, "_type", None) == entry.dspy

    def __subclasscheck__(self, cls: type) -> bool:
        native = self._native()
        return native is not None and issubclass(cls, native)


def factory(name: str) -> RoutedFactory:
    entry = _REGISTRY.by_name(name)
    if entry is None:
        raise UserError(f"no module kind is published as dspex.{name}")
    return RoutedFactory(name, entry.kind)
