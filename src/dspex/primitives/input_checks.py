"""The input warnings DSPy's ``Predict`` logs: a value whose type does not fit its signature
field (with ``warn_on_type_mismatch``), and required input fields that were not given."""

from __future__ import annotations

import logging
import types
from typing import Any, Literal, Union, get_args, get_origin

from dspex import settings

__all__ = ["check_inputs", "type_name", "value_fits"]


def type_name(annotation: Any) -> str:
    """``list[int]``, ``Literal['a', 'b']``, ``int``: how the warning names a type."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is None:
        return str(getattr(annotation, "__name__", annotation))
    if origin is Literal:
        return f"Literal[{', '.join(repr(a) for a in args)}]"
    if args:
        inner = ", ".join("..." if a is ... else type_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    return str(getattr(origin, "__name__", origin))


def _fits(value: Any, expected: Any) -> bool:
    if expected is Any:
        return True
    origin, args = get_origin(expected), get_args(expected)
    if origin is Union or origin is types.UnionType:
        return any(_fits(value, a) for a in args)
    if origin is Literal:
        return value in args
    if origin in (list, set, frozenset):
        return isinstance(value, origin) and (not args or all(_fits(v, args[0]) for v in value))
    if origin is dict:
        if not isinstance(value, dict):
            return False
        return not args or all(_fits(k, args[0]) and _fits(v, args[1]) for k, v in value.items())
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if not args:
            return True
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(v, args[0]) for v in value)
        return len(value) == len(args) and all(
            _fits(v, a) for v, a in zip(value, args, strict=True)
        )
    if isinstance(expected, type):
        return isinstance(value, expected)
    return False


def value_fits(value: Any, expected: Any) -> bool:
    """Whether ``value`` fits the annotation (a list of strings fits ``str``, as in DSPy)."""
    if expected is str and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return True
    return _fits(value, expected)


def _plan(signature: Any) -> tuple[tuple[tuple[str, Any], ...], tuple[str, ...]]:
    """What :func:`check_inputs` looks at, worked out once per signature (kept in its
    ``_cache``, which is dropped whenever the signature changes): the ``(name, annotation)``
    of each input field whose type is checked, and the input fields that must be given."""
    plan: tuple[tuple[tuple[str, Any], ...], tuple[str, ...]] | None = signature._cache.get(
        "input_checks"
    )
    if plan is None:
        from dspex.adapters.values import annotation_allows_none

        fields = signature._input_fields
        typed = tuple(
            (name, info.annotation)
            for name, info in fields.items()
            if not (info.json_schema_extra or {}).get("__dspy_is_type_undefined")
        )
        required = tuple(
            k for k, info in fields.items() if not annotation_allows_none(info.annotation)
        )
        plan = signature._cache["input_checks"] = (typed, required)
    return plan


def check_inputs(
    signature: Any,
    inputs: dict[str, Any],
    logger: logging.Logger,
    now: settings.Settings | None = None,
) -> None:
    """Log DSPy's warnings for ``inputs`` against ``signature``'s input fields (``now``: the
    settings in force, when the caller already has them)."""
    typed, required = _plan(signature)
    if (now or settings.current()).warn_on_type_mismatch:
        for name, expected in typed:
            value = inputs.get(name)
            if value is None or type(value) is expected or value_fits(value, expected):
                continue
            logger.warning(
                "Type mismatch for field '%s': expected %s based on given Signature, but the "
                "provided value is incompatible: %s.",
                name,
                type_name(expected),
                value,
            )
    if len(required) == 1:  # the common single input: no list built when it is given
        if required[0] in inputs:
            return
    elif not required:
        return
    missing = [k for k in required if k not in inputs]
    if missing:
        logger.warning(
            "Not all input fields were provided to module. Present: %s. Missing: %s.",
            [k for k in signature._input_fields if k in inputs],
            missing,
        )
