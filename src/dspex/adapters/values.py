"""Rendering values into prompts and parsing them back (DSPy 3.4.1's rules, byte for byte).

Plain JSON values (str, int, finite float, bool, None, lists and str-keyed dicts of them) are
rendered without pydantic; anything else goes through pydantic exactly as DSPy does.
"""

from __future__ import annotations

import ast
import enum
import inspect
import json
import math
import re
import sys
import types
from collections.abc import Mapping
from functools import lru_cache
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from dspex.errors import AdapterParseError, parse_failure_text
from dspex.signatures.field import FieldInfo

__all__ = [
    "AdapterFormatted",
    "annotation_allows_none",
    "apply_output_field_defaults",
    "format_field_value",
    "get_annotation_name",
    "get_field_description_string",
    "neutralize_markers",
    "parse_error",
    "parse_fields",
    "parse_value",
    "serialize_for_json",
    "translate_field_type",
]

_MARKER = re.compile(r"\[\[ ## (\w+) ## \]\]")


def _loaded(module: str, name: str) -> Any:
    """A class from one of our custom-type modules if it was imported (else no value can be one)."""
    loaded = sys.modules.get(module)
    return getattr(loaded, name, None) if loaded is not None else None


def _custom_type_base() -> Any:
    return _loaded("dspex.adapters.types.base_type", "Type")


def _reasoning_type() -> Any:
    return _loaded("dspex.adapters.types.reasoning", "Reasoning")


def neutralize_markers(text: str) -> str:
    """Escape field markers inside a value so it cannot forge prompt/response structure.

    ``[[ ## answer ## ]]`` becomes ``[[ \\## answer \\## ]]``. This is DSPex's one deliberate
    byte divergence from DSPy, and it only happens when a value contains a marker.
    """
    if "[[ ## " not in text:
        return text
    return _MARKER.sub(lambda m: f"[[ \\## {m.group(1)} \\## ]]", text)


class AdapterFormatted(str):
    """Text an adapter produced itself (ReAct's formatted trajectory) passed back as an input.

    Its ``[[ ## name ## ]]`` markers are structure, not forged input, so it is sent as is; the
    values inside it were already neutralized when the adapter formatted them.
    """

    __slots__ = ()


def annotation_allows_none(annotation: Any) -> bool:
    if annotation is None or annotation is type(None):
        return True
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is Annotated:
        return bool(args) and annotation_allows_none(args[0])
    if origin is Union or origin is types.UnionType:
        return any(annotation_allows_none(a) for a in args)
    return False


def apply_output_field_defaults(
    output_fields: Mapping[str, FieldInfo], fields: dict[str, Any]
) -> dict[str, Any]:
    completed: dict[str, Any] = {}
    for name, info in output_fields.items():
        if name in fields:
            completed[name] = fields[name]
        elif not info.is_required():
            completed[name] = info.get_default(call_default_factory=True)
        elif annotation_allows_none(info.annotation):
            completed[name] = None
    return completed


def parse_error(
    adapter: str,
    raw: str,
    expected: Any,
    parsed: dict[str, Any] | None = None,
    message: str | None = None,
) -> AdapterParseError:
    """An :class:`AdapterParseError` whose text reads as DSPy 3.4.1's (``expected``: field names)."""
    names = list(expected)
    text = parse_failure_text(adapter, raw, names, parsed, message)
    missing = [n for n in names if parsed is None or n not in parsed]
    return AdapterParseError(
        text, adapter=adapter, raw=raw, parsed=dict(parsed or {}), missing=missing
    )


def sign_parse_error(exc: AdapterParseError, signature: Any) -> None:
    """Attach ``signature`` to ``exc`` unless it has one (DSPy's ``.signature``): adapters'
    ``parse`` call this on the way out of a failed parse, then re-raise.

    An attribute, not a structured field: signature classes need not pickle.
    """
    if getattr(exc, "signature", None) is None:
        exc.signature = signature


def parse_fields(
    adapter: str, outputs: Mapping[str, FieldInfo], raw_fields: Any, completion: str
) -> dict[str, Any]:
    """Typed values for the output fields found (first occurrence wins), defaults applied.

    ``raw_fields`` is an iterable of ``(name, raw value)``; raises :class:`AdapterParseError`
    for a value that does not fit its type or for missing required fields.
    """
    fields: dict[str, Any] = {}
    for name, raw in raw_fields:
        if name is None or name in fields or name not in outputs:
            continue
        annotation = outputs[name].annotation
        if annotation is str and type(raw) is str:
            fields[name] = raw  # parse_value's answer for text, without its frame
            continue
        try:
            fields[name] = parse_value(raw, annotation)
        except (ValueError, TypeError) as exc:
            raise parse_error(
                adapter,
                completion,
                outputs,
                message=f"Failed to parse field {name} with value {raw} from the LM response. "
                f"Error message: {exc}",
            ) from None
    if [*fields] == [*outputs]:
        return fields  # all found, in order: the defaults below would change nothing
    fields = apply_output_field_defaults(outputs, fields)
    if fields.keys() != outputs.keys():
        raise parse_error(adapter, completion, outputs, fields)
    return fields


_json_dumps = json.JSONEncoder(ensure_ascii=False).encode
"""``json.dumps(value, ensure_ascii=False)`` without building an encoder per call."""


_JSON_ESCAPED = re.compile(r'["\\\x00-\x1f]')


def _dumps_str_list(value: Any) -> str | None:
    """``_json_dumps`` of a list of strings that need no escaping (``None`` for anything else)."""
    if type(value) is not list or not value:
        return None
    for item in value:
        if type(item) is not str or _JSON_ESCAPED.search(item):
            return None
    return '["' + '", "'.join(value) + '"]'


def _is_plain(value: Any) -> bool:
    t = type(value)
    if t is str or t is int or t is bool or value is None:
        return True
    if t is float:
        return math.isfinite(value)
    if t is list:
        return all(_is_plain(v) for v in value)
    if t is dict:
        return all(type(k) is str and _is_plain(v) for k, v in value.items())
    return False


@lru_cache(maxsize=512)
def _type_adapter(annotation: Any) -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(annotation)


def serialize_for_json(value: Any) -> Any:
    if _is_plain(value):
        return value
    from dspex.adapters.types import History

    if isinstance(value, History):
        return {"messages": serialize_for_json(value.messages)}
    try:
        value_type: Any = type(value)
        dumped: Any = _type_adapter(value_type).dump_python(value, mode="json", fallback=str)
        return dumped
    except Exception:
        return str(value)


def _format_blob(blob: str) -> str:
    if "\n" not in blob and "«" not in blob and "»" not in blob:
        return f"«{blob}»"
    modified = blob.replace("\n", "\n    ")
    return f"«««\n    {modified}\n»»»"


def _format_input_list(value: list[Any]) -> str:
    if len(value) == 0:
        return "N/A"
    if len(value) == 1:
        return _format_blob(value[0])
    return "\n".join(f"[{i + 1}] {_format_blob(txt)}" for i, txt in enumerate(value))


def format_field_value(field_info: FieldInfo, value: Any) -> str:
    """How DSPy renders one value into a message (lists of text for ``str`` fields, JSON...)."""
    if type(value) is str:  # the common value first (an AdapterFormatted is a subclass)
        return neutralize_markers(value) if "[[ ## " in value else value
    if isinstance(value, AdapterFormatted):
        return str(value)
    if isinstance(value, list) and field_info.annotation is str:
        text = _format_input_list(value)
    elif (plain := _dumps_str_list(value)) is not None:  # what the general path gives
        text = plain
    else:
        jsonable = serialize_for_json(value)
        text = _json_dumps(jsonable) if isinstance(jsonable, dict | list) else str(jsonable)
    return neutralize_markers(text)


def _move_type_to_front(d: Any) -> Any:
    if isinstance(d, Mapping):
        return {
            k: _move_type_to_front(v)
            for k, v in sorted(d.items(), key=lambda item: (item[0] != "type", item[0]))
        }
    if isinstance(d, list):
        return [_move_type_to_front(v) for v in d]
    return d


def _json_schema(annotation: Any) -> Any:
    return _move_type_to_front(_type_adapter(annotation).json_schema())


def _is_subclass(annotation: Any, base: type) -> bool:
    try:
        return inspect.isclass(annotation) and issubclass(annotation, base)
    except TypeError:
        return False


def translate_field_type(field_name: str, field_info: FieldInfo) -> str:
    """The ``{name}  # note: ...`` placeholder DSPy puts in the field-structure section."""
    field_type = field_info.annotation
    code = _loaded("dspex.adapters.types.code", "Code")
    if (
        field_info.json_schema_extra.get("__dspy_field_type") == "input"
        or field_type is str
        or (field_type is not None and field_type is _reasoning_type())
    ):
        desc = ""
    elif field_type is bool:
        desc = "must be True or False"
    elif field_type in (int, float):
        desc = f"must be a single {field_type.__name__} value"
    elif _is_subclass(field_type, enum.Enum):
        desc = "must be one of: " + "; ".join(str(m.value) for m in field_type)
    elif hasattr(field_type, "__origin__") and field_type.__origin__ is Literal:
        desc = "must exactly match (no extra characters) one of: " + "; ".join(
            str(x) for x in field_type.__args__
        )
    elif code is not None and _is_subclass(field_type, code) and field_type.description():
        desc = ""  # Code's description already says how to write it
    else:
        desc = f"must adhere to the JSON schema: {json.dumps(_json_schema(field_type), ensure_ascii=False)}"
    desc = (" " * 8) + f"# note: the value you produce {desc}" if desc else ""
    return f"{{{field_name}}}{desc}"


def _quoted_literal(s: str) -> str:
    has_single, has_double = "'" in s, '"' in s
    if has_single and not has_double:
        return f'"{s}"'
    if has_double and not has_single:
        return f"'{s}'"
    if has_single and has_double:
        escaped = s.replace("'", "\\'")
        return f"'{escaped}'"
    return f"'{s}'"


def get_annotation_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is types.UnionType:
        origin = Union
    if origin is None:
        if annotation is not None and annotation is _reasoning_type():
            return "str"  # DSPy names Reasoning as str (ChainOfThought's old reasoning field)
        if hasattr(annotation, "__name__"):
            return str(annotation.__name__)
        return str(annotation)
    if origin is Literal:
        inner = ", ".join(
            _quoted_literal(a) if isinstance(a, str) else get_annotation_name(a) for a in args
        )
        return f"{get_annotation_name(origin)}[{inner}]"
    inner = ", ".join(get_annotation_name(a) for a in args)
    return f"{get_annotation_name(origin)}[{inner}]"


def get_field_description_string(fields: Mapping[str, FieldInfo]) -> str:
    lines = []
    for idx, (name, info) in enumerate(fields.items()):
        line = f"{idx + 1}. `{name}` ({get_annotation_name(info.annotation)})"
        desc = info.json_schema_extra["desc"]
        desc = desc if desc != f"${{{name}}}" else ""
        base = _custom_type_base()
        if base is not None:
            for custom in base.extract_custom_type_from_annotation(info.annotation):
                if custom.description():
                    desc += (
                        f"\n    Type description of {get_annotation_name(custom)}: "
                        f"{custom.description()}"
                    )
        line += f": {desc}"
        constraints = info.json_schema_extra.get("constraints")
        if constraints:
            line += f"\nConstraints: {constraints}"
        lines.append(line)
    return "\n".join(lines).strip()


def _find_enum_member(enum_cls: Any, identifier: Any) -> Any:
    for member in enum_cls:
        if member.value == identifier:
            return member
    if identifier in enum_cls.__members__:
        return enum_cls[identifier]
    raise ValueError(f"{identifier} is not a valid name or value for the enum {enum_cls.__name__}")


def _json_repair_loads(text: str) -> Any:
    import json_repair

    try:
        return json_repair.loads(text)
    except Exception:
        return ""


def parse_value(value: Any, annotation: Any) -> Any:
    """DSPy's ``parse_value``: turn the text for one field into a value of its type.

    Raises ``ValueError`` (pydantic's ``ValidationError`` is one) when it does not fit.
    """
    if annotation is str:
        return str(value)
    if type(value) is str:  # same results as the checks below reach for plain numbers
        if annotation is float and _FLOAT.fullmatch(value):
            return float(value)
        if annotation is int and _INT.fullmatch(value):
            return int(value)
    if isinstance(annotation, enum.EnumMeta):
        return _find_enum_member(annotation, value)
    origin = get_origin(annotation)
    if origin is Literal:
        allowed = get_args(annotation)
        if value in allowed:
            return value
        if isinstance(value, str):
            v = value.strip()
            if v.startswith(("Literal[", "str[")) and v.endswith("]"):
                v = v[v.find("[") + 1 : -1]
            if len(v) > 1 and v[0] == v[-1] and v[0] in "\"'":
                v = v[1:-1]
            if v in allowed:
                return v
            value = v
    if not isinstance(value, str):
        return _type_adapter(annotation).validate_python(value)
    if (
        origin in (Union, types.UnionType)
        and type(None) in get_args(annotation)
        and str in get_args(annotation)
    ):
        return _type_adapter(annotation).validate_python(value)
    # fast paths with the same results as json_repair + pydantic (lax mode) for plain text
    if annotation is int and _INT.fullmatch(value):
        return int(value)
    if annotation is float and _FLOAT.fullmatch(value):
        return float(value)
    candidate = _json_repair_loads(value)
    if candidate == "" and value != "":
        try:
            candidate = ast.literal_eval(value)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            candidate = value
    try:
        return _type_adapter(annotation).validate_python(candidate)
    except ValueError:
        base = _custom_type_base()
        if base is None or not _is_subclass(annotation, base):
            raise
        # a custom type may parse the raw text itself (e.g. Code strips a markdown fence)
        try:
            return _type_adapter(annotation).validate_python(value)
        except ValueError:
            pass
        raise


_INT = re.compile(r"-?(?:0|[1-9][0-9]{0,17})")
_FLOAT = re.compile(r"-?(?:0|[1-9][0-9]{0,15})\.[0-9]{1,15}")
