"""Values across the bridge: one tagged wire form, decoded into DSPy objects or DSPex objects.

Everything that crosses the pool is msgpack: ``None``, bools, numbers, strings, bytes, lists
and string-keyed dicts pass unchanged. Anything else becomes a *tagged dict*
``{"__dspex__": tag, ...}``, built by :class:`Encoder` (either side) and rebuilt by
:class:`Decoder`, whose ``side`` says which library's objects to build:

============  ==========================================  ===============================
tag           parent side (``side="dspex"``)              worker side (``side="dspy"``)
============  ==========================================  ===============================
example       ``dspex.Example``                           ``dspy.Example``
prediction    ``dspex.Prediction`` (+ completions, usage)  ``dspy.Prediction``
signature     ``dspex.Signature`` class                    ``dspy.Signature`` class
field         ``dspex.InputField/OutputField``             ``dspy.InputField/OutputField``
type          a type (``list[Person]``...)                 the same type
history       ``dspex.History``                            ``dspy.History``
pydantic      the model, by import path                    the model, by import path
callable      the function, by import path                 the function, by import path
callback      —                                            a proxy calling the parent
module        —                                            a fresh DSPy module (ctor+state)
object        a handle on an object hosted in a worker     the hosted object itself
============  ==========================================  ===============================

Import paths are resolved through a *resolver*: in workers it enforces the allow-list of
import roots (see :mod:`dspex.bridge.host`), so nothing outside it is imported through the
protocol.
"""

from __future__ import annotations

import enum
import importlib
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal

from dspex.errors import SecurityError, SignatureError

__all__ = [
    "TAG",
    "Decoder",
    "Encoder",
    "Side",
    "decode_type",
    "encode_type",
    "import_path",
    "import_root",
    "is_importable",
    "path_of",
]

TAG = "__dspex__"
Side = Literal["dspy", "dspex"]
Resolver = Callable[[str], Any]

_BUILTINS: dict[str, Any] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "bytes": bytes,
    "list": list,
    "dict": dict,
    "tuple": tuple,
    "set": set,
    "frozenset": frozenset,
    "object": object,
    "Any": Any,
    "None": type(None),
}
_BUILTIN_NAMES = {id(v): k for k, v in _BUILTINS.items()}
_ORIGINS: dict[str, Any] = {
    "list": list,
    "dict": dict,
    "tuple": tuple,
    "set": set,
    "frozenset": frozenset,
    "type": type,
}
_ORIGIN_NAMES = {id(v): k for k, v in _ORIGINS.items()}


# ---------------------------------------------------------------------------- import paths


def path_of(obj: Any) -> str | None:
    """``"module:qualname"`` for a top-level importable object (``None`` for locals/lambdas)."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        return None
    if "<" in qualname or module == "__main__":
        return None
    return f"{module}:{qualname}"


def import_path(path: str) -> Any:
    """The object named by ``"module:qualname"`` or ``"package.module.Name"``."""
    if ":" in path:
        module, _, qualname = path.partition(":")
    else:
        module, _, qualname = path.rpartition(".")
    if not module or not qualname:
        raise SecurityError(f"{path!r} is not an import path ('package.module:Name')", path=path)
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def import_root(path: str) -> str:
    """The top-level package an import path names (``"pkg.mod:Name"`` -> ``"pkg"``)."""
    module = path.partition(":")[0] if ":" in path else path.rpartition(".")[0]
    return module.split(".")[0]


def is_importable(obj: Any) -> str | None:
    """The import path of ``obj`` if importing it gives back the very same object."""
    path = path_of(obj)
    if path is None:
        return None
    try:
        found = import_path(path)
    except Exception:
        return None
    return path if found is obj else None


# ---------------------------------------------------------------------------- types


def _is_dspy_type(tp: Any, name: str) -> bool:
    return getattr(tp, "__name__", None) == name and str(getattr(tp, "__module__", "")).startswith(
        "dspy"
    )


def encode_type(tp: Any) -> dict[str, Any]:
    """A JSON-able description of an annotation (builtins, generics, unions, literals, classes)."""
    if tp is None or tp is type(None):
        return {"k": "none"}
    name = _BUILTIN_NAMES.get(id(tp))
    if name is not None:
        return {"k": "name", "v": name}
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        return {"k": "literal", "a": [_literal_value(a) for a in args]}
    if origin is typing.Union or origin is types.UnionType:
        return {"k": "union", "a": [encode_type(a) for a in args]}
    if origin is not None:
        if origin is typing.Annotated:
            return encode_type(args[0])
        oname = _ORIGIN_NAMES.get(id(origin))
        if oname is None:
            oname = path_of(origin)
            if oname is None:
                raise SignatureError(f"cannot send type {tp!r} to a worker", reason="type")
            return {"k": "generic_path", "o": oname, "a": [_encode_arg(a) for a in args]}
        return {"k": "generic", "o": oname, "a": [_encode_arg(a) for a in args]}
    if _is_history(tp):
        return {"k": "special", "v": "History"}
    for special in ("Image", "Audio", "Code", "Tool", "ToolCalls", "Reasoning", "File"):
        if _is_dspy_type(tp, special):
            return {"k": "special", "v": special}
    path = path_of(tp)
    if path is None or not isinstance(tp, type):
        raise SignatureError(
            f"cannot send type {tp!r} to a worker: it must be importable by path "
            "(define it at module level)",
            reason="type",
        )
    return {"k": "path", "v": path}


def _encode_arg(a: Any) -> Any:
    if a is Ellipsis:
        return {"k": "ellipsis"}
    return encode_type(a)


def _literal_value(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return {"enum": path_of(type(value)), "v": value.value}
    return value


def _is_history(tp: Any) -> bool:
    if getattr(tp, "__name__", None) != "History":
        return False
    module = str(getattr(tp, "__module__", ""))
    return module.startswith(("dspy", "dspex"))


def decode_type(data: Mapping[str, Any], side: Side, resolve: Resolver) -> Any:
    """The annotation described by :func:`encode_type`, built for ``side``."""
    kind = data["k"]
    if kind == "none":
        return type(None)
    if kind == "name":
        return _BUILTINS[data["v"]]
    if kind == "ellipsis":
        return Ellipsis
    if kind == "literal":
        values = [
            resolve(v["enum"])(v["v"]) if isinstance(v, dict) and "enum" in v else v
            for v in data["a"]
        ]
        return Literal.__getitem__(tuple(values))
    if kind == "union":
        members = tuple(decode_type(a, side, resolve) for a in data["a"])
        return typing.Union.__getitem__(members)
    if kind in ("generic", "generic_path"):
        origin = _ORIGINS[data["o"]] if kind == "generic" else resolve(data["o"])
        args = tuple(decode_type(a, side, resolve) for a in data["a"])
        if not args:
            return origin
        return origin[args if len(args) > 1 else args[0]]
    if kind == "special":
        name = data["v"]
        if side == "dspex" and name == "History":
            from dspex.adapters import History

            return History
        if side == "dspex":
            raise SignatureError(f"DSPy type {name} has no DSPex equivalent", reason="type")
        import dspy

        return getattr(dspy, name)
    if kind == "path":
        return resolve(data["v"])
    raise SignatureError(f"unknown type description {data!r}", reason="type")


# ---------------------------------------------------------------------------- signatures


def _extra_of(field: Any) -> dict[str, Any]:
    extra = getattr(field, "json_schema_extra", None) or {}
    return dict(extra) if isinstance(extra, Mapping) else {}


def _is_undefined(value: Any) -> bool:
    name = type(value).__name__
    return name in ("PydanticUndefinedType", "_Undefined")


def encode_signature(sig: Any, enc: Encoder) -> dict[str, Any]:
    """A DSPy or DSPex signature class as a tagged dict (instructions, typed fields)."""
    fields = []
    for name, field in sig.fields.items():
        extra = _extra_of(field)
        kind = extra.pop("__dspy_field_type", "input")
        entry: dict[str, Any] = {
            "name": name,
            "kind": kind,
            "type": encode_type(field.annotation),
            "extra": enc.encode(extra),
        }
        default = getattr(field, "default", None)
        if not _is_undefined(default):
            entry["default"] = enc.encode(default)
        description = getattr(field, "description", None)
        if description is not None:
            entry["description"] = description
        fields.append(entry)
    return {TAG: "signature", "instructions": sig.instructions, "fields": fields}


def _make_field(side: Side, kind: str, extra: dict[str, Any], entry: Mapping[str, Any]) -> Any:
    """The field as ``side``'s ``InputField``/``OutputField`` would build it (no warnings for
    the ``prefix``/``desc`` keys an existing field already carries)."""
    extra = {k: v for k, v in extra.items() if k != "__dspy_field_type"}
    kwargs: dict[str, Any] = {}
    if "default" in entry:
        kwargs["default"] = entry["default"]
    if entry.get("description") is not None:
        kwargs["description"] = entry["description"]
    if side == "dspy":
        import pydantic

        return pydantic.Field(**kwargs, json_schema_extra={**extra, "__dspy_field_type": kind})
    from dspex.signatures import InputField, OutputField

    maker = InputField if kind == "input" else OutputField
    return maker(**kwargs, json_schema_extra=extra)


def decode_signature(data: Mapping[str, Any], dec: Decoder) -> Any:
    spec: dict[str, Any] = {}
    for entry in data["fields"]:
        extra = dec.decode(entry.get("extra") or {})
        tp = decode_type(entry["type"], dec.side, dec.resolve)
        values: dict[str, Any] = {"description": entry.get("description")}
        if "default" in entry:
            values["default"] = dec.decode(entry["default"])
        spec[entry["name"]] = (tp, _make_field(dec.side, entry["kind"], extra, values))
    if dec.side == "dspy":
        import dspy

        return dspy.Signature(spec, data["instructions"])
    from dspex.signatures.signature import make_signature

    return make_signature(spec, data["instructions"])


# ---------------------------------------------------------------------------- values


def _family(obj: Any) -> str:
    """``"dspy"``, ``"dspex"`` or ``""``: which library a value's class comes from."""
    module = type(obj).__module__
    if module.startswith("dspy.") or module == "dspy":
        return "dspy"
    if module.startswith("dspex.") or module == "dspex":
        return "dspex"
    return ""


def _is_signature_class(obj: Any) -> bool:
    if not isinstance(obj, type):
        return False
    meta = type(obj)
    return meta.__name__ == "SignatureMeta" and meta.__module__.startswith(("dspy.", "dspex."))


def _is_pydantic_model(obj: Any) -> bool:
    return hasattr(type(obj), "model_fields") and hasattr(obj, "model_dump")


_SCALARS = frozenset({str, int, float, bool, bytes, type(None)})
"""Types that cross as they are, checked exactly (subclasses take the ``isinstance`` path)."""


class Encoder:
    """Turns values into the wire form.

    ``on_callable(fn)`` decides how a function crosses (default: by import path only);
    ``on_module(m)`` how a module object does; ``on_other(obj)`` anything else (default:
    an ``opaque`` tag carrying its ``repr``).
    """

    def __init__(
        self,
        *,
        on_callable: Callable[[Any], dict[str, Any]] | None = None,
        on_module: Callable[[Any], dict[str, Any] | None] | None = None,
        on_other: Callable[[Any], dict[str, Any] | None] | None = None,
    ) -> None:
        self.on_callable = on_callable
        self.on_module = on_module
        self.on_other = on_other

    def encode(self, value: Any) -> Any:
        kind = type(value)
        if kind in _SCALARS:  # (exact types first: the common case, no isinstance chain)
            return value
        if kind is dict:
            return self._encode_dict(value)
        if kind is list:
            encode = self.encode
            return [v if type(v) in _SCALARS else encode(v) for v in value]
        if value is None or isinstance(value, bool | int | float | str | bytes):
            return value
        if isinstance(value, list):
            return [self.encode(v) for v in value]
        if isinstance(value, dict):
            return self._encode_dict(value)
        if isinstance(value, tuple):
            return {TAG: "tuple", "items": [self.encode(v) for v in value]}
        return self._encode_object(value)

    def _encode_dict(self, value: dict[Any, Any]) -> Any:
        for key in value:
            if type(key) is not str:
                break
        else:
            if TAG not in value:
                out = {}  # (a loop, not a comprehension: dicts here are small)
                for k, v in value.items():
                    out[k] = v if type(v) in _SCALARS else self.encode(v)
                return out
        return {
            TAG: "dict",
            "items": [[self.encode(k), self.encode(v)] for k, v in value.items()],
        }

    def _encode_object(self, value: Any) -> Any:
        family = _family(value)
        cls_name = type(value).__name__
        if family and cls_name in ("Prediction", "EvaluationResult"):
            completions = getattr(value, "completions", None)
            data: dict[str, Any] = {
                TAG: "prediction",
                "store": self.encode(dict(value.items(include_dspy=True)))
                if family == "dspex"
                else self._encode_dict(value._store),  # (a copy already)
                "completions": None,
            }
            if completions is not None and len(completions) > 1:
                data["completions"] = self.encode({k: list(v) for k, v in completions.items()})
            usage = value.get_lm_usage() if hasattr(value, "get_lm_usage") else None
            if usage:
                data["usage"] = self.encode(usage)
            return data
        if family and cls_name == "Example":
            keys = getattr(value, "_input_keys", None)
            return {
                TAG: "example",
                "store": self.encode(dict(value._store)),
                "inputs": None if keys is None else sorted(keys),
            }
        if family and cls_name == "Completions":
            return {TAG: "completions", "data": self.encode({k: list(v) for k, v in value.items()})}
        if family and cls_name == "History":
            return {TAG: "history", "messages": self.encode(list(value.messages))}
        if _is_signature_class(value):
            return encode_signature(value, self)
        if family == "dspex" and cls_name == "FieldInfo":
            extra = _extra_of(value)
            kind = extra.pop("__dspy_field_type", "input")
            out: dict[str, Any] = {TAG: "field", "kind": kind, "extra": self.encode(extra)}
            if not _is_undefined(value.default):
                out["default"] = self.encode(value.default)
            return out
        if isinstance(value, enum.Enum):
            path = path_of(type(value))
            if path is not None:
                return {TAG: "enum", "type": path, "value": self.encode(value.value)}
        if _is_pydantic_model(value) and family != "dspy":
            path = path_of(type(value))
            if path is not None:
                return {TAG: "pydantic", "type": path, "data": value.model_dump(mode="json")}
        if isinstance(value, type) or typing.get_origin(value) is not None:
            try:
                return {TAG: "type", "type": encode_type(value)}
            except SignatureError:
                pass
        if self.on_module is not None:
            encoded = self.on_module(value)
            if encoded is not None:
                return encoded
        if callable(value) and not isinstance(value, type):
            if self.on_callable is not None:
                return self.on_callable(value)
            path = is_importable(value)
            if path is not None:
                return {TAG: "callable", "path": path}
        if self.on_other is not None:
            encoded = self.on_other(value)
            if encoded is not None:
                return encoded
        return {
            TAG: "opaque",
            "type": f"{type(value).__module__}.{type(value).__qualname__}",
            "repr": repr(value)[:500],
        }


class Decoder:
    """Rebuilds wire values as ``side``'s objects.

    ``resolve(path)`` imports a type or function (workers enforce their allow-list there);
    ``on_tag(tag, data)`` handles tags this module does not know (callbacks, modules,
    hosted objects); it returns ``NotImplemented`` to fall through to an error.
    """

    def __init__(
        self,
        side: Side,
        *,
        resolve: Resolver = import_path,
        on_tag: Callable[[str, dict[str, Any]], Any] | None = None,
    ) -> None:
        self.side: Side = side
        self.resolve = resolve
        self.on_tag = on_tag
        self._library: Any = None

    def decode(self, value: Any) -> Any:
        kind = type(value)
        if kind in _SCALARS:
            return value
        if kind is dict or isinstance(value, dict):
            tag = value.get(TAG)
            if tag is not None:
                return self._decode_tagged(tag, value)
            out: dict[Any, Any] = {}  # (a loop, not a comprehension: dicts here are small)
            for k, v in value.items():
                out[k] = v if type(v) in _SCALARS else self.decode(v)
            return out
        if kind is list or isinstance(value, list):
            return [v if type(v) in _SCALARS else self.decode(v) for v in value]
        return value

    def _lib(self) -> Any:
        """``dspy`` or ``dspex`` (imported on first use)."""
        lib = self._library
        if lib is None:
            lib = self._library = importlib.import_module(self.side)
        return lib

    def _decode_tagged(self, tag: str, data: dict[str, Any]) -> Any:
        if tag == "tuple":
            return tuple(self.decode(v) for v in data["items"])
        if tag == "dict":
            return {_hashable(self.decode(k)): self.decode(v) for k, v in data["items"]}
        if tag == "example":
            ex = self._lib().Example(**self.decode(data["store"]))
            if data.get("inputs") is not None:
                ex = ex.with_inputs(*data["inputs"])
            return ex
        if tag == "prediction":
            return self._prediction(data)
        if tag == "completions":
            lib = self._lib()
            return lib.Completions(self.decode(data["data"]))
        if tag == "history":
            messages = self.decode(data["messages"])
            if self.side == "dspy":
                import dspy

                return dspy.History(messages=messages)
            from dspex.adapters import History

            return History(messages)
        if tag == "signature":
            return decode_signature(data, self)
        if tag == "field":
            values = {"default": self.decode(data["default"])} if "default" in data else {}
            return _make_field(self.side, data["kind"], self.decode(data["extra"]), values)
        if tag == "type":
            return decode_type(data["type"], self.side, self.resolve)
        if tag == "enum":
            return self.resolve(data["type"])(self.decode(data["value"]))
        if tag == "pydantic":
            return self.resolve(data["type"]).model_validate(data["data"])
        if tag == "callable":
            return self.resolve(data["path"])
        if self.on_tag is not None:
            result = self.on_tag(tag, data)
            if result is not NotImplemented:
                return result
        if tag == "opaque":
            return _Opaque(data.get("type", "?"), data.get("repr", ""))
        from dspex.errors import ProtocolError

        raise ProtocolError(f"cannot decode a {tag!r} value on the {self.side} side")

    def _prediction(self, data: dict[str, Any]) -> Any:
        lib = self._lib()
        completions = data.get("completions")
        if completions is not None:
            pred = lib.Prediction.from_completions(self.decode(completions))
            store = self.decode(data["store"])
            for key, value in store.items():
                if key not in pred:
                    pred[key] = value
        else:
            store = self.decode(data["store"])
            usage = data.get("usage")
            if self.side == "dspex":  # (a fresh store: built in one step)
                return lib.Prediction.of_store(store, self.decode(usage) if usage else None)
            pred = lib.Prediction(**store)
        usage = data.get("usage")
        if usage:
            pred.set_lm_usage(self.decode(usage))
        return pred


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    return value


class _Opaque:
    """A value that could not cross the process boundary, shown by its type and ``repr``."""

    __slots__ = ("repr", "type")

    def __init__(self, type_: str, text: str) -> None:
        self.type = type_
        self.repr = text

    def __repr__(self) -> str:
        return f"<remote {self.type}: {self.repr}>"
