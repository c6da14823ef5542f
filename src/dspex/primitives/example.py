"""``Example``: a record of named fields, some marked as inputs (DSPy's semantics)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["Example"]


def _to_serializable(value: Any) -> Any:
    if hasattr(value, "toDict"):
        return value.toDict()
    if hasattr(value, "model_dump") and callable(value.model_dump):  # pydantic model
        return value.model_dump()
    if isinstance(value, list):
        return [_to_serializable(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_serializable(v) for k, v in value.items()}
    return value


class Example:
    """A record with dict-like and attribute access; ``with_inputs`` marks the input fields.

    Fields whose names start with ``dspy_`` are internal: hidden from ``keys()``/``len()``.
    """

    _store: dict[str, Any]
    _input_keys: set[str] | None

    def __init__(self, base: Example | Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        object.__setattr__(self, "_input_keys", None)
        if isinstance(base, Example):
            store = dict(base._store)
            keys = getattr(base, "_input_keys", None)
            if keys is not None:
                object.__setattr__(self, "_input_keys", set(keys))
        elif base:
            store = dict(base)
        else:
            store = {}
        store.update(kwargs)
        object.__setattr__(self, "_store", store)

    # ------------------------------------------------------------------ access
    def __getattr__(self, key: str) -> Any:
        if key.startswith("__") and key.endswith("__"):
            raise AttributeError(key)
        try:
            return self.__dict__["_store"][key]
        except KeyError:
            raise AttributeError(
                f"'{type(self).__name__}' object has no attribute '{key}'"
            ) from None

    def __setattr__(self, key: str, value: Any) -> None:
        if key.startswith("_") or key in dir(type(self)):
            object.__setattr__(self, key, value)
        else:
            self._store[key] = value

    def __getitem__(self, key: str) -> Any:
        return self._store[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._store[key] = value

    def __delitem__(self, key: str) -> None:
        del self._store[key]

    def __contains__(self, key: object) -> bool:
        return key in self._store

    def __len__(self) -> int:
        return sum(1 for k in self._store if not k.startswith("dspy_"))

    def __iter__(self) -> Iterator[str]:
        return iter(dict(self._store))

    def __repr__(self) -> str:
        visible = {k: v for k, v in self._store.items() if not k.startswith("dspy_")}
        return f"Example({visible})" + f" (input_keys={self._input_keys})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Example) and self._store == other._store

    def __hash__(self) -> int:
        return hash(frozenset(self._store.items()))

    def keys(self, include_dspy: bool = False) -> list[str]:
        return [k for k in self._store if include_dspy or not k.startswith("dspy_")]

    def values(self, include_dspy: bool = False) -> list[Any]:
        return [v for k, v in self._store.items() if include_dspy or not k.startswith("dspy_")]

    def items(self, include_dspy: bool = False) -> list[tuple[str, Any]]:
        return [(k, v) for k, v in self._store.items() if include_dspy or not k.startswith("dspy_")]

    def get(self, key: str, default: Any = None) -> Any:
        return self._store.get(key, default)

    # ------------------------------------------------------------------ inputs / labels
    def with_inputs(self, *keys: str) -> Example:
        """A copy with ``keys`` marked as the input fields (the rest are labels)."""
        copied = self.copy()
        object.__setattr__(copied, "_input_keys", set(keys))
        return copied

    def inputs(self) -> Example:
        """Only the input fields. Raises ``ValueError`` if ``with_inputs`` was never called."""
        if self._input_keys is None:
            raise ValueError(
                "Inputs have not been set for this example. "
                "Use `example.with_inputs()` to set them."
            )
        picked = {k: v for k, v in self._store.items() if k in self._input_keys}
        new = type(self)(base=picked)
        object.__setattr__(new, "_input_keys", self._input_keys)
        return new

    def labels(self) -> Example:
        """Only the non-input fields."""
        input_keys = self.inputs().keys()
        return type(self)({k: v for k, v in self._store.items() if k not in input_keys})

    def copy(self, **kwargs: Any) -> Example:
        return type(self)(base=self, **kwargs)

    def without(self, *keys: str) -> Example:
        copied = self.copy()
        for key in keys:
            del copied[key]
        return copied

    def toDict(self) -> dict[str, Any]:
        return {k: _to_serializable(v) for k, v in self._store.items()}

    to_dict = toDict
