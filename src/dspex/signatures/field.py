"""Signature fields: ``InputField`` / ``OutputField`` and the ``FieldInfo`` they return.

A ``FieldInfo`` carries what DSPy keeps on a pydantic ``FieldInfo``: the ``annotation``, a
``default`` (or ``default_factory``), and ``json_schema_extra`` holding ``desc``, ``prefix``
and ``__dspy_field_type`` ("input"/"output"). It is a plain object: no pydantic import.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import Any, Final

__all__ = [
    "IS_TYPE_UNDEFINED",
    "UNDEFINED",
    "FieldInfo",
    "InputField",
    "OutputField",
    "is_undefined",
]

IS_TYPE_UNDEFINED: Final = "__dspy_is_type_undefined"
"""Marker (DSPy's key) for a field whose type the user did not write."""

_DSPY_FIELD_ARG_NAMES = (
    "desc",
    "prefix",
    "format",
    "parser",
    "__dspy_field_type",
    IS_TYPE_UNDEFINED,
)
_DEPRECATED = {
    "prefix": "The 'prefix' argument in InputField/OutputField is deprecated and has no effect in DSPy. "
    "It will be removed in a future version.",
    "format": "The 'format' argument in InputField/OutputField is deprecated and has no effect in DSPy. "
    "It will be removed in a future version.",
    "parser": "The 'parser' argument in InputField/OutputField is deprecated and has no effect in DSPy. "
    "It will be removed in a future version.",
}
_CONSTRAINTS = {
    "gt": "greater than: ",
    "ge": "greater than or equal to: ",
    "lt": "less than: ",
    "le": "less than or equal to: ",
    "min_length": "minimum length: ",
    "max_length": "maximum length: ",
    "multiple_of": "a multiple of the given number: ",
    "allow_inf_nan": "allow 'inf', '-inf', 'nan' values: ",
}


class _Undefined:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNDEFINED"

    def __reduce__(self) -> str:
        return "UNDEFINED"

    def __copy__(self) -> _Undefined:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> _Undefined:
        return self


UNDEFINED: Final = _Undefined()
"""The default of a field that has none (DSPy: ``PydanticUndefined``)."""


def is_undefined(value: Any) -> bool:
    """Whether ``value`` is the "no default" marker (ours, or pydantic's)."""
    return value is UNDEFINED or type(value).__name__ == "PydanticUndefinedType"


class FieldInfo:
    """One field of a signature (see module docstring)."""

    __slots__ = (
        "annotation",
        "default",
        "default_factory",
        "description",
        "json_schema_extra",
        "metadata",
    )

    def __init__(
        self,
        *,
        annotation: Any = None,
        default: Any = UNDEFINED,
        default_factory: Callable[[], Any] | None = None,
        description: str | None = None,
        json_schema_extra: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.annotation = annotation
        self.default = default
        self.default_factory = default_factory
        self.description = description
        self.json_schema_extra: dict[str, Any] = (
            json_schema_extra if json_schema_extra is not None else {}
        )
        self.metadata: dict[str, Any] = metadata or {}

    def is_required(self) -> bool:
        return is_undefined(self.default) and self.default_factory is None

    def get_default(self, call_default_factory: bool = True) -> Any:
        if self.default_factory is not None:
            return self.default_factory() if call_default_factory else self.default_factory
        return None if is_undefined(self.default) else self.default

    def copy(self) -> FieldInfo:
        new = _new_field(FieldInfo)  # no __init__: every slot is set right here
        new.annotation = self.annotation
        new.default = self.default
        new.default_factory = self.default_factory
        new.description = self.description
        new.json_schema_extra = dict(self.json_schema_extra)
        new.metadata = dict(self.metadata)
        return new

    def __copy__(self) -> FieldInfo:
        return self.copy()

    def __deepcopy__(self, memo: dict[int, Any]) -> FieldInfo:
        new = self.copy()
        new.json_schema_extra = copy.deepcopy(self.json_schema_extra, memo)
        return new

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FieldInfo):
            return NotImplemented
        return all(getattr(self, s) == getattr(other, s) for s in self.__slots__)

    def __hash__(self) -> int:
        # consistent with __eq__ (equal fields share kind and prefix); lets FieldInfoWithName
        # keys be hashed as in DSPy, where pydantic's FieldInfo is hashable
        extra = self.json_schema_extra
        return hash((extra.get("__dspy_field_type"), str(extra.get("prefix"))))

    def __repr__(self) -> str:
        parts = [f"annotation={getattr(self.annotation, '__name__', self.annotation)}"]
        if not self.is_required():
            parts.append(f"default={self.default!r}")
        parts.append(f"json_schema_extra={self.json_schema_extra}")
        return f"FieldInfo({', '.join(parts)})"


_new_field = object.__new__


def _make_field(kind: str, kwargs: dict[str, Any]) -> FieldInfo:
    if not kwargs:  # the common ``OutputField()``
        new = _new_field(FieldInfo)
        new.annotation = None
        new.default = UNDEFINED
        new.default_factory = None
        new.description = None
        new.json_schema_extra = {"__dspy_field_type": kind}
        new.metadata = {}
        return new
    if not _DEPRECATED.keys().isdisjoint(kwargs):
        for arg, message in _DEPRECATED.items():
            if arg in kwargs:
                warnings.warn(message, DeprecationWarning, stacklevel=3)
    extra: dict[str, Any] = {}
    other: dict[str, Any] = {}
    constraints: list[str] = []
    for key, value in kwargs.items():
        if key in _DSPY_FIELD_ARG_NAMES:
            extra[key] = value
        else:
            other[key] = value
            if key in _CONSTRAINTS:
                constraints.append(f"{_CONSTRAINTS[key]}{value}")
    extra["__dspy_field_type"] = kind
    if "description" in kwargs and "desc" not in extra:
        extra["desc"] = kwargs["description"]
    if constraints:
        extra["constraints"] = ", ".join(constraints)
    default = other.pop("default", UNDEFINED)
    factory = other.pop("default_factory", None)
    description = other.pop("description", None)
    if isinstance(other.get("json_schema_extra"), dict):
        extra.update(other.pop("json_schema_extra"))
    new = _new_field(FieldInfo)
    new.annotation = None
    new.default = default
    new.default_factory = factory
    new.description = description
    new.json_schema_extra = extra
    new.metadata = other
    return new


def InputField(**kwargs: Any) -> Any:
    """Declare an input field: ``question: str = InputField(desc="...")``."""
    return _make_field("input", kwargs)


def OutputField(**kwargs: Any) -> Any:
    """Declare an output field: ``answer: int = OutputField(desc="...")``."""
    return _make_field("output", kwargs)
