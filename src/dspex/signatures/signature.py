"""``Signature``: the typed inputs/outputs and instructions of an LM task (DSPy-compatible).

As in DSPy, a signature is a *class*: ``Signature("question -> answer")`` returns a new
subclass, and the class form declares fields with ``InputField``/``OutputField``. Unlike
DSPy, it is not a pydantic model (construction is ~100x cheaper); pydantic is imported only
when a field's type needs it (JSON schemas, validation of complex types).
"""

from __future__ import annotations

import inspect
import keyword
import re
import sys
import typing
from collections import ChainMap
from collections.abc import Mapping
from functools import lru_cache
from types import FrameType
from typing import Any, ClassVar, NamedTuple

from dspex.errors import SignatureError, SignatureFieldError
from dspex.signatures.field import IS_TYPE_UNDEFINED, FieldInfo, InputField, OutputField
from dspex.signatures.parse import (
    _MISSING,
    ParsedField,
    _resolve,
    parse_signature_string,
    referenced_names,
    resolve_simple_name,
)

__all__ = ["Signature", "SignatureMeta", "ensure_signature", "infer_prefix", "make_signature"]


_CAMEL_1 = re.compile("(.)([A-Z][a-z]+)")
_CAMEL_2 = re.compile("([a-z0-9])([A-Z])")
_LETTER_DIGIT_BOUNDARY = re.compile(r"(?<=[a-zA-Z])(?=\d)|(?<=\d)(?=[a-zA-Z])")


@lru_cache(maxsize=4096)
def infer_prefix(attribute_name: str) -> str:
    """DSPy's prefix inference: ``"camelCase2x"`` -> ``"Camel Case 2 X"`` (a pure function, cached)."""
    s = attribute_name
    if not s.islower():  # the camel-case rules need an upper-case letter
        s = _CAMEL_2.sub(r"\1_\2", _CAMEL_1.sub(r"\1_\2", s))
    s = _LETTER_DIGIT_BOUNDARY.sub("_", s)  # DSPy's letter-digit, then digit-letter rule
    return " ".join(w if w.isupper() else w.capitalize() for w in s.split("_"))


def _default_instructions(inputs: Mapping[str, Any], outputs: Mapping[str, Any]) -> str:
    ins = ", ".join(f"`{f}`" for f in inputs)
    outs = ", ".join(f"`{f}`" for f in outputs)
    return f"Given the fields {ins}, produce the fields {outs}."


def _resolve_annotation(
    cls_name: str, name: str, raw: Any, module: str | None, local_ns: Mapping[str, Any]
) -> Any:
    """String annotations (``from __future__ import annotations``) resolved safely.

    Names resolve from the defining scope's locals, then its module's globals (no copy of
    either is made), then the fixed table of string signatures.
    """
    if not isinstance(raw, str):
        return raw
    mod = sys.modules.get(module or "")
    if raw.isidentifier() and not keyword.iskeyword(raw):  # the common ``x: int``
        found = resolve_simple_name(raw, local_ns, vars(mod)) if mod is not None else _MISSING
        if found is not _MISSING:
            return found
    scope: Mapping[str, Any] = (
        ChainMap(local_ns, vars(mod)) if mod is not None else local_ns  # type: ignore[arg-type]
    )
    node = _annotation_node(raw)
    if node is None:
        raise SignatureError(
            f"field {name!r} of {cls_name} has an unparsable annotation {raw!r}",
            source=raw,
            position=None,
            reason="unparsable annotation",
        )
    return _resolve(raw, node, len("def f("), scope)


@lru_cache(maxsize=1024)
def _annotation_node(raw: str) -> Any:
    """The parsed expression of an annotation string (``None`` if unparsable); never mutated."""
    import ast

    try:
        return ast.parse(raw, mode="eval").body
    except SyntaxError:
        return None


class SignatureMeta(type):
    """Metaclass: collects fields at class creation; ``Signature(...)`` builds new classes."""

    _fields: dict[str, FieldInfo]
    _input_fields: dict[str, FieldInfo]
    _output_fields: dict[str, FieldInfo]
    _cache: dict[Any, Any]

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls is Signature:
            custom_types = kwargs.pop("custom_types", None)
            if custom_types is None and args and isinstance(args[0], str):
                custom_types = _caller_types(args[0])
            kwargs["custom_types"] = custom_types
            return make_signature(*args, **kwargs)
        return super().__call__(*args, **kwargs)

    def __new__(
        mcs, name: str, bases: tuple[type, ...], namespace: dict[str, Any], **kwargs: Any
    ) -> SignatureMeta:
        raw_annotations: Mapping[str, Any] = namespace.get("__annotations__", {})
        given_ns: Mapping[str, Any] | None = kwargs.pop("_local_ns", None)
        caller = sys._getframe(1)
        local_ns: Mapping[str, Any] | None = None  # read only if an annotation is a string
        own: dict[str, FieldInfo] = {}
        for key, value in list(namespace.items()):
            if isinstance(value, FieldInfo):
                field = value.copy()
                if key not in raw_annotations:
                    field.annotation = str
                    field.json_schema_extra[IS_TYPE_UNDEFINED] = True
                else:
                    raw = raw_annotations[key]
                    if isinstance(raw, str):
                        if local_ns is None:
                            local_ns = given_ns or _caller_locals(caller)
                        raw = _resolve_annotation(
                            name, key, raw, namespace.get("__module__"), local_ns
                        )
                    field.annotation = raw
                own[key] = field
                del namespace[key]
        for key, raw in raw_annotations.items():
            if (
                key not in own
                and not key.startswith("_")
                and typing.get_origin(raw) is not ClassVar
            ):
                if isinstance(raw, str) and raw.startswith(("ClassVar", "typing.ClassVar")):
                    continue
                raise SignatureFieldError(
                    f"Field `{key}` in `{name}` must be declared with InputField or OutputField",
                    source=None,
                    position=None,
                    reason="annotation without InputField/OutputField",
                )
        cls = super().__new__(mcs, name, bases, namespace)
        inherited: dict[str, FieldInfo] = {}
        for base in reversed(cls.__mro__[1:]):
            if isinstance(base, SignatureMeta) and getattr(base, "_fields", None):
                inherited.update({k: v.copy() for k, v in base._fields.items()})
        fields = {**inherited, **own} if inherited else own
        cls._fields = fields
        cls._input_fields, cls._output_fields = _complete_fields(name, fields)
        cls._cache = {}
        if not namespace.get("__doc__"):
            doc = None
            for base in bases:
                if isinstance(base, SignatureMeta) and base is not Signature:
                    base_doc = getattr(base, "__doc__", "")
                    if base_doc:
                        doc = base_doc
            cls.__doc__ = doc or _default_instructions(cls._input_fields, cls._output_fields)
        return cls

    def _set_fields(cls, fields: dict[str, FieldInfo]) -> None:
        inputs: dict[str, FieldInfo] = {}
        outputs: dict[str, FieldInfo] = {}
        for k, v in fields.items():
            kind = v.json_schema_extra["__dspy_field_type"]
            if kind == "input":
                inputs[k] = v
            elif kind == "output":
                outputs[k] = v
        cls._fields = fields
        cls._input_fields = inputs
        cls._output_fields = outputs
        cls._cache = {}

    # ------------------------------------------------------------------ DSPy's class API
    @property
    def instructions(cls) -> str:
        return inspect.cleandoc(getattr(cls, "__doc__", "") or "")

    @instructions.setter
    def instructions(cls, instructions: str) -> None:
        cls.__doc__ = instructions
        cls._cache = {}

    @property
    def input_fields(cls) -> dict[str, FieldInfo]:
        return dict(cls._input_fields)

    @property
    def output_fields(cls) -> dict[str, FieldInfo]:
        return dict(cls._output_fields)

    @property
    def fields(cls) -> dict[str, FieldInfo]:
        return {**cls._input_fields, **cls._output_fields}

    @property
    def model_fields(cls) -> dict[str, FieldInfo]:
        """DSPy/pydantic name for all fields in declaration order."""
        return dict(cls._fields)

    @property
    def signature(cls) -> str:
        return f"{', '.join(cls._input_fields)} -> {', '.join(cls._output_fields)}"

    def __repr__(cls) -> str:
        field_repr = "\n    ".join(f"{n} = Field({f})" for n, f in cls.fields.items())
        return f"{cls.__name__}({cls.signature}\n    instructions={cls.instructions!r}\n    {field_repr}\n)"

    def __eq__(cls, other: object) -> bool:
        if cls is other:
            return True
        if not isinstance(other, SignatureMeta):
            return NotImplemented
        return (
            cls.instructions == other.instructions
            and {k: (v.annotation, v.json_schema_extra) for k, v in cls.fields.items()}
            == {k: (v.annotation, v.json_schema_extra) for k, v in other.fields.items()}
            and list(cls.fields) == list(other.fields)
        )

    def __hash__(cls) -> int:
        return hash((cls.signature, cls.instructions))


def _complete_fields(
    name: str, fields: Mapping[str, FieldInfo]
) -> tuple[dict[str, FieldInfo], dict[str, FieldInfo]]:
    """Check every field is an input or output field and fill in DSPy's default prefix and
    desc; returns ``(input fields, output fields)``."""
    inputs: dict[str, FieldInfo] = {}
    outputs: dict[str, FieldInfo] = {}
    for key, field in fields.items():
        extra = field.json_schema_extra
        kind = extra.get("__dspy_field_type")
        if kind == "input":
            inputs[key] = field
        elif kind == "output":
            outputs[key] = field
        else:
            raise SignatureFieldError(
                f"Field `{key}` in `{name}` must be declared with InputField or OutputField",
                reason="not an InputField/OutputField",
            )
        if "prefix" not in extra:
            extra["prefix"] = infer_prefix(key) + ":"
        if "desc" not in extra:
            extra["desc"] = f"${{{key}}}"
    return inputs, outputs


def _caller_locals(frame: FrameType | None) -> Mapping[str, Any]:
    """Locals of the frame that defines a class-form signature (for local types).

    ``frame`` is the caller of ``SignatureMeta.__new__``; frames of this package are skipped.
    """
    while frame is not None and frame.f_globals.get("__name__", "").startswith("dspex.signatures"):
        frame = frame.f_back
    return frame.f_locals if frame is not None else {}


def _caller_types(text: str) -> dict[str, Any] | None:
    """DSPy's behaviour: names in a string signature resolve from the caller's scopes."""
    names = referenced_names(text)
    if not names:
        return None
    needed = set(names)
    found: dict[str, Any] = {}
    frame = sys._getframe(2)
    depth = 0
    while frame is not None and needed and depth < 100:
        depth += 1
        for name in list(needed):
            if name in frame.f_locals:
                found[name] = frame.f_locals[name]
                needed.discard(name)
            elif name in frame.f_globals:
                found[name] = frame.f_globals[name]
                needed.discard(name)
        frame = frame.f_back  # type: ignore[assignment]
    return found or None


class Signature(metaclass=SignatureMeta):
    """Base of all signatures. See the module docstring."""

    def __init__(self, **values: Any) -> None:
        """An instance holds values for the signature's fields (as DSPy's pydantic model does;
        names that are not fields are ignored)."""
        fields = type(self)._fields
        for name, value in values.items():
            if name in fields:
                setattr(self, name, value)

    @classmethod
    def with_instructions(cls, instructions: str) -> type[Signature]:
        return make_signature(cls.fields, instructions)

    @classmethod
    def append_instructions(cls, instructions: str) -> type[Signature]:
        return make_signature(cls.fields, f"{cls.instructions}\n\n{instructions}")

    @classmethod
    def with_updated_fields(cls, name: str, type_: Any = None, **kwargs: Any) -> type[Signature]:
        fields = {k: v.copy() for k, v in cls.fields.items()}
        if name not in fields:
            raise SignatureError(f"{cls.__name__} has no field {name!r}", reason="unknown field")
        fields[name].json_schema_extra = {**fields[name].json_schema_extra, **kwargs}
        if type_ is not None:
            fields[name].annotation = type_
        return make_signature(fields, cls.instructions)

    @classmethod
    def prepend(cls, name: str, field: FieldInfo, type_: Any = None) -> type[Signature]:
        return cls.insert(0, name, field, type_)

    @classmethod
    def append(cls, name: str, field: FieldInfo, type_: Any = None) -> type[Signature]:
        return cls.insert(-1, name, field, type_)

    @classmethod
    def delete(cls, name: str) -> type[Signature]:
        fields = dict(cls.fields)
        fields.pop(name, None)
        return make_signature(fields, cls.instructions)

    @classmethod
    def insert(cls, index: int, name: str, field: FieldInfo, type_: Any = None) -> type[Signature]:
        if not isinstance(field, FieldInfo):
            raise SignatureError(
                f"insert() needs an InputField()/OutputField(), got {type(field).__name__}",
                reason="not a field",
            )
        if type_ is None:
            type_ = field.annotation
        if type_ is None:
            type_ = str
        inputs = list(cls._input_fields.items())
        outputs = list(cls._output_fields.items())
        kind = field.json_schema_extra["__dspy_field_type"]
        target = inputs if kind == "input" else outputs
        if index < 0:
            index += len(target) + 1
        if index < 0 or index > len(target):
            raise SignatureError(
                f"Invalid index to insert: {index}, index must be in the range of "
                f"[{len(target) - 1}, {len(target)}] for {kind} fields, but received: {index}.",
                reason="index out of range",
            )
        new = field.copy()
        new.annotation = type_
        target.insert(index, (name, new))
        return make_signature(dict(inputs + outputs), cls.instructions)

    @classmethod
    def equals(cls, other: Any) -> bool:
        """DSPy's structural equality: same instructions and same field metadata."""
        if not isinstance(other, SignatureMeta):
            return False
        if cls.instructions != other.instructions:
            return False
        for name in cls.fields.keys() | other.fields.keys():
            if name not in other.fields or name not in cls.fields:
                return False
            if cls.fields[name].json_schema_extra != other.fields[name].json_schema_extra:
                return False
        return True

    @classmethod
    def dump_state(cls) -> dict[str, Any]:
        return {
            "instructions": cls.instructions,
            "fields": [
                {
                    "prefix": f.json_schema_extra["prefix"],
                    "description": f.json_schema_extra["desc"],
                }
                for f in cls.fields.values()
            ],
        }

    @classmethod
    def load_state(cls, state: Mapping[str, Any]) -> type[Signature]:
        try:
            instructions = state["instructions"]
            saved_fields = list(state["fields"])
        except (KeyError, TypeError) as exc:
            from dspex.errors import StateError

            raise StateError(f"signature state needs 'instructions' and 'fields': {exc}") from None
        fields = {k: v.copy() for k, v in cls.fields.items()}
        for field, saved in zip(fields.values(), saved_fields, strict=False):
            field.json_schema_extra["prefix"] = saved["prefix"]
            field.json_schema_extra["desc"] = saved["description"]
        return make_signature(fields, instructions)


# ---------------------------------------------------------------------------- construction


class _Blueprint(NamedTuple):
    """A validated string signature, built once; each call makes a class from it."""

    doc: Any
    annotations: dict[str, Any]
    fields: dict[str, FieldInfo]


@lru_cache(maxsize=1024)
def _template(text: str, instructions: str | None) -> _Blueprint:
    return _blueprint(_fields_from_parsed(parse_signature_string(text)), instructions)


def _blueprint(fields: dict[str, FieldInfo], instructions: str | None) -> _Blueprint:
    """What ``SignatureMeta.__new__`` computes for fields that are already resolved."""
    ins, outs = _complete_fields("StringSignature", fields)
    doc = instructions or _default_instructions(ins, outs)
    return _Blueprint(doc, {k: v.annotation for k, v in fields.items()}, fields)


def _instantiate(blueprint: _Blueprint, name: str) -> type[Signature]:
    """A fresh, independent signature class from a blueprint, without re-validating it."""
    namespace = {
        "__doc__": blueprint.doc,
        "__module__": __name__,
        "__annotations__": dict(blueprint.annotations),
    }
    cls = type.__new__(SignatureMeta, name, (Signature,), namespace)
    cls._set_fields({k: v.copy() for k, v in blueprint.fields.items()})
    return cls  # type: ignore[return-value]


def _fields_from_parsed(
    parsed: tuple[ParsedField, ...] | list[ParsedField],
) -> dict[str, FieldInfo]:
    fields: dict[str, FieldInfo] = {}
    for p in parsed:
        field: FieldInfo = InputField() if p.is_input else OutputField()
        if p.is_input:
            field.json_schema_extra[IS_TYPE_UNDEFINED] = p.type_undefined
        field.annotation = p.annotation
        fields[p.name] = field
    return fields


def make_signature(
    signature: str | Mapping[str, Any],
    instructions: str | None = None,
    signature_name: str = "StringSignature",
    custom_types: Mapping[str, Any] | None = None,
) -> type[Signature]:
    """Build a signature class from a string or a ``{name: field | (type, field)}`` mapping."""
    if isinstance(signature, str):
        if not custom_types:
            return _instantiate(_template(signature, instructions), signature_name)
        fields = _fields_from_parsed(parse_signature_string(signature, custom_types))
        return _instantiate(_blueprint(fields, instructions), signature_name)
    elif isinstance(signature, Mapping):
        fields = {}
        for name, spec in signature.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise SignatureError(
                    f"Field names must be identifiers, got {name!r}", reason="bad name"
                )
            if isinstance(spec, FieldInfo):
                type_, field = spec.annotation, spec
            elif isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[1], FieldInfo):
                type_, field = spec
            else:
                raise SignatureError(
                    f"Field {name!r} must be an InputField()/OutputField() or a (type, field) tuple, "
                    f"got {spec!r}",
                    reason="bad field spec",
                )
            new = field.copy()
            new.annotation = str if type_ is None else type_
            fields[name] = new
    else:
        raise SignatureError(
            f"a signature is a string, a dict of fields or a Signature class, got {type(signature).__name__}",
            reason="bad signature type",
        )
    return _build(fields, instructions, signature_name)


def _build(
    fields: dict[str, FieldInfo], instructions: str | None, signature_name: str
) -> type[Signature]:
    if instructions is None:
        ins = {
            k: v for k, v in fields.items() if v.json_schema_extra["__dspy_field_type"] == "input"
        }
        outs = {
            k: v for k, v in fields.items() if v.json_schema_extra["__dspy_field_type"] == "output"
        }
        instructions = _default_instructions(ins, outs)
    namespace: dict[str, Any] = {"__doc__": instructions, "__module__": __name__}
    namespace["__annotations__"] = {k: v.annotation for k, v in fields.items()}
    namespace.update(fields)
    return SignatureMeta(signature_name, (Signature,), namespace, _local_ns={})  # type: ignore[return-value]


def ensure_signature(signature: Any, instructions: str | None = None) -> Any:
    """A signature class from a string, dict or class (``None`` stays ``None``)."""
    if isinstance(signature, SignatureMeta):
        if instructions is not None:
            raise SignatureError(
                "Don't specify instructions when initializing with a Signature",
                reason="instructions",
            )
        return signature
    if signature is None:
        return None
    if isinstance(signature, str):  # names in the string resolve from the caller's scopes
        return make_signature(signature, instructions, custom_types=_caller_types(signature))
    if isinstance(signature, Mapping):
        return make_signature(signature, instructions)
    raise SignatureError(
        f"expected a signature string, dict or Signature class, got {type(signature).__name__}",
        reason="bad signature type",
    )
