"""Safe parsing of string signatures: ``"context: list[str], question -> answer: int"``.

The text is parsed with :mod:`ast` and type expressions are resolved against a fixed table
(builtins, ``typing`` names, DSPex types) plus names the caller passes explicitly
(``custom_types``) or defines in its own scope. Nothing in the string is ever imported or
evaluated. Every problem raises :class:`~dspex.errors.SignatureError` with the position.
"""

from __future__ import annotations

import ast
import keyword
import re
import types
import typing
from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import Any, NamedTuple

from dspex.errors import SignatureError

__all__ = ["ParsedField", "parse_signature_string", "referenced_names"]

_PREFIX = "def f("
_BUILTIN_TYPES: dict[str, Any] = {
    t.__name__: t
    for t in (int, str, float, bool, list, tuple, dict, set, frozenset, complex, bytes, bytearray)
}
_BUILTIN_TYPES["NoneType"] = type(None)
_BUILTIN_TYPES["None"] = None
_TYPING_NAMES = {
    name: getattr(typing, name)
    for name in (
        "Any", "Dict", "List", "Tuple", "Set", "FrozenSet", "Optional", "Union", "Literal",
        "Annotated", "Sequence", "Mapping", "Iterable",
    )
}  # fmt: skip


class ParsedField(NamedTuple):
    name: str
    annotation: Any
    type_undefined: bool
    is_input: bool


_AFTER_COLON = re.compile(r":\s*([A-Za-z_][A-Za-z0-9_]*)")
_IN_TYPE = re.compile(r"([\[,|])\s*([A-Za-z_][A-Za-z0-9_]*)")


@lru_cache(maxsize=1024)
def referenced_names(text: str) -> frozenset[str]:
    """Type names the fixed table does not know (for scope lookup): names after a colon, and
    names after ``[``, ``|`` or a comma inside brackets (a comma between fields starts a field
    name, not a type). With quotes in the text, every name after a comma counts (a bracket
    inside a string literal would throw off the bracket depth)."""
    known = _DSPEX_TYPES()
    found = set()
    for match in _AFTER_COLON.finditer(text):
        name = match.group(1)
        if name not in _BUILTIN_TYPES and name not in _TYPING_NAMES and name not in known:
            found.add(name)
    quoted = "'" in text or '"' in text
    bracketed = "[" in text
    for match in _IN_TYPE.finditer(text):
        name = match.group(2)
        if name in _BUILTIN_TYPES or name in _TYPING_NAMES or name in known:
            continue
        if match.group(1) == "," and not quoted:
            at = match.start()
            if not bracketed or text.count("[", 0, at) <= text.count("]", 0, at):
                continue  # a comma between fields, not inside a type
        found.add(name)
    return frozenset(found)


# DSPex's own type names -> defining module; imported on first use so ``import dspex`` and
# plain signatures stay light (the custom types need pydantic)
_DSPEX_TYPE_MODULES: dict[str, str] = {
    "Audio": "dspex.adapters.types.audio",
    "Citations": "dspex.adapters.types.citation",
    "Code": "dspex.adapters.types.code",
    "Document": "dspex.adapters.types.citation",
    "File": "dspex.adapters.types.file",
    "History": "dspex.adapters.types.history",
    "Image": "dspex.adapters.types.image",
    "Reasoning": "dspex.adapters.types.reasoning",
    "Tool": "dspex.adapters.types.tool",
    "ToolCallResults": "dspex.adapters.types.tool",
    "ToolCalls": "dspex.adapters.types.tool",
    "Type": "dspex.adapters.types.base_type",
}
# ``dspy.Image`` / ``dspex.Image`` in a string signature name the same types
_TYPE_NAMESPACES = ("dspy", "dspex", "dspy.experimental", "dspex.experimental")


class _LazyTypes(Mapping[str, Any]):
    """The table above as a mapping whose values are imported when first read."""

    def __getitem__(self, name: str) -> Any:
        module = _DSPEX_TYPE_MODULES[name]
        import importlib

        return getattr(importlib.import_module(module), name)

    def __contains__(self, name: object) -> bool:
        return name in _DSPEX_TYPE_MODULES

    def __iter__(self) -> Iterator[str]:
        return iter(_DSPEX_TYPE_MODULES)

    def __len__(self) -> int:
        return len(_DSPEX_TYPE_MODULES)


_LAZY_TYPES = _LazyTypes()


def _DSPEX_TYPES() -> Mapping[str, Any]:
    """DSPex's own type names (each imported on first use)."""
    return _LAZY_TYPES


def _namespaced_type(dotted: str) -> Any:
    """The DSPex type a ``dspy.X``-style dotted name stands for, or ``_MISSING``."""
    head, _, name = dotted.rpartition(".")
    if head in _TYPE_NAMESPACES and name in _DSPEX_TYPE_MODULES:
        return _LAZY_TYPES[name]
    return _MISSING


def _error(source: str, position: int | None, reason: str) -> SignatureError:
    where = f" at position {position}" if position is not None else ""
    return SignatureError(
        f"invalid signature {source!r}{where}: {reason}",
        source=source,
        position=position,
        reason=reason,
    )


def parse_signature_string(
    text: str, custom_types: Mapping[str, Any] | None = None
) -> list[ParsedField]:
    """Parse ``"a, b: int -> c: list[str]"`` into fields, inputs first."""
    if not isinstance(text, str):
        raise _error(repr(text), None, "a string signature must be a str")
    if text.count("->") != 1:
        pos = text.find("->", text.find("->") + 2) if text.count("->") > 1 else None
        raise _error(text, pos, "a signature needs exactly one '->' between inputs and outputs")
    arrow = text.index("->")
    inputs = _parse_side(text, text[:arrow], 0, custom_types, is_input=True)
    outputs = _parse_side(text, text[arrow + 2 :], arrow + 2, custom_types, is_input=False)
    dupes = sorted({f.name for f in inputs} & {f.name for f in outputs})
    if dupes:
        raise _error(
            text,
            None,
            f"input and output fields must have distinct names, but found duplicates: {', '.join(dupes)}",
        )
    return inputs + outputs


def _parse_side(
    source: str, part: str, offset: int, custom_types: Mapping[str, Any] | None, *, is_input: bool
) -> list[ParsedField]:
    if "\n" in part or "\r" in part:
        part = part.replace("\r", " ").replace("\n", " ")
    fast = _parse_side_fast(source, part, offset, custom_types, is_input)
    if fast is not None:
        return fast
    try:
        tree = ast.parse(f"{_PREFIX}{part}): pass")
    except SyntaxError as exc:
        col = (exc.offset or 1) - 1 - len(_PREFIX)
        pos = offset + max(0, min(col, len(part)))
        raise _error(source, pos, f"cannot parse field list ({exc.msg})") from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise _error(source, offset, f"cannot parse field list ({type(exc).__name__})") from None
    func = tree.body[0]
    assert isinstance(func, ast.FunctionDef)
    args = func.args
    extra = args.posonlyargs or args.kwonlyargs or args.vararg or args.kwarg or args.defaults
    if extra:
        raise _error(source, offset, "fields are plain names with optional types: 'name: type'")
    fields = []
    seen: set[str] = set()
    for arg in args.args:
        pos = offset + arg.col_offset - len(_PREFIX)
        if arg.arg in seen:
            raise _error(source, pos, f"field {arg.arg!r} is declared twice")
        seen.add(arg.arg)
        if arg.annotation is None:
            fields.append(ParsedField(arg.arg, str, True, is_input))
        else:
            try:
                annotation = _resolve(source, arg.annotation, offset, custom_types)
            except (TypeError, ValueError) as exc:  # typing rejects e.g. list[Optional]
                if isinstance(exc, SignatureError):
                    raise
                apos = offset + arg.annotation.col_offset - len(_PREFIX)
                raise _error(source, apos, f"invalid type expression ({exc})") from None
            fields.append(ParsedField(arg.arg, annotation, False, is_input))
    return fields


_SIMPLE_SIDE = re.compile(r"[A-Za-z0-9_ \t,:\[\].|]*")
_SIMPLE_FIELD = re.compile(r"[ \t]*([A-Za-z_][A-Za-z0-9_]*)[ \t]*(?::(.*))?")


def _parse_side_fast(
    source: str, part: str, offset: int, custom: Mapping[str, Any] | None, is_input: bool
) -> list[ParsedField] | None:
    """The common case without ``ast.parse`` of the whole side: plain ASCII names with
    optional types made of names, dots, brackets, commas and ``|``. Returns ``None`` for
    anything else, and for anything that would be an error, so that the full path decides
    (and reports the error with its position). Types resolve exactly as in the full path."""
    if not _SIMPLE_SIDE.fullmatch(part) or not part.strip():
        return None
    if "," not in part:
        pieces = [part]  # unbalanced brackets fail to parse as a type below
    elif "[" not in part and "]" not in part:
        pieces = part.split(",")
    else:
        pieces = []
        depth = start = 0
        for i, ch in enumerate(part):
            if ch == "[":
                depth += 1
            elif ch == "]":
                depth -= 1
                if depth < 0:
                    return None
            elif ch == "," and depth == 0:
                pieces.append(part[start:i])
                start = i + 1
        if depth:
            return None
        pieces.append(part[start:])
    fields: list[ParsedField] = []
    seen: set[str] = set()
    for piece in pieces:
        match = _SIMPLE_FIELD.fullmatch(piece)
        if match is None:
            return None
        name, type_text = match.groups()
        if name in seen or keyword.iskeyword(name) or name == "__debug__":
            return None
        seen.add(name)
        if type_text is None:
            fields.append(ParsedField(name, str, True, is_input))
            continue
        annotation = (
            _resolve_type(type_text.strip(), custom)
            if custom
            else _resolve_plain_type(type_text.strip())
        )
        if annotation is _MISSING:
            return None
        fields.append(ParsedField(name, annotation, False, is_input))
    return fields


def _resolve_type(type_text: str, custom: Mapping[str, Any] | None) -> Any:
    """The type a type expression stands for, or ``_MISSING`` if it is not a valid one."""
    node = _type_node(type_text)
    if node is None:
        return _MISSING
    try:
        return _resolve(type_text, node, 0, custom)
    except (TypeError, ValueError):  # SignatureError is a ValueError
        return _MISSING


@lru_cache(maxsize=1024)
def _resolve_plain_type(type_text: str) -> Any:
    """``_resolve_type`` without custom names: it depends on the text alone (types are
    immutable, so signatures may share them)."""
    return _resolve_type(type_text, None)


@lru_cache(maxsize=1024)
def _type_node(type_text: str) -> ast.expr | None:
    """A type expression parsed on its own (``None`` if it does not parse); never mutated."""
    if not type_text:
        return None
    try:
        return ast.parse(type_text, mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def _resolve(source: str, node: ast.expr, offset: int, custom: Mapping[str, Any] | None) -> Any:
    pos = offset + getattr(node, "col_offset", 0) - len(_PREFIX)

    def fail(reason: str) -> SignatureError:
        return _error(source, pos, reason)

    if isinstance(node, ast.Name):
        name = node.id
        if custom and name in custom:
            return _type_like(custom[name], name, fail)
        if name in _BUILTIN_TYPES:
            return _BUILTIN_TYPES[name]
        if name in _TYPING_NAMES:
            return _TYPING_NAMES[name]
        dspex_types = _DSPEX_TYPES()
        if name in dspex_types:
            return dspex_types[name]
        raise fail(f"unknown type name {name!r} (pass it with custom_types={{{name!r}: ...}})")
    if isinstance(node, ast.Attribute):
        dotted = _dotted(node)
        if dotted and (found := _namespaced_type(dotted)) is not _MISSING:
            return found
        if dotted and custom and dotted in custom:
            return _type_like(custom[dotted], dotted, fail)
        if dotted and custom:
            head, _, rest = dotted.partition(".")
            if head in custom:
                value: Any = custom[head]
                for part in rest.split("."):
                    if part.startswith("_") or not hasattr(value, part):
                        raise fail(f"unknown attribute {part!r} in {dotted!r}")
                    value = getattr(value, part)
                return _type_like(value, dotted, fail)
        raise fail(f"unknown type {dotted or ast.dump(node)!r}")
    if isinstance(node, ast.Subscript):
        base = _resolve(source, node.value, offset, custom)
        elts = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        if base is typing.Literal:
            values = tuple(_literal_value(source, e, offset) for e in elts)
            return typing.Literal[values]
        args = tuple(_resolve(source, e, offset, custom) for e in elts)
        if base is typing.Optional:
            if len(args) != 1:
                raise fail("Optional takes exactly one type argument")
            return typing.Optional[args[0]]  # noqa: UP045
        if base is typing.Union:
            return typing.Union[args]  # noqa: UP007
        try:
            return base[args if len(args) > 1 else args[0]]
        except Exception as exc:  # e.g. int[str]
            raise fail(
                f"{getattr(base, '__name__', base)!s} cannot be parameterized ({exc})"
            ) from None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        left = _resolve(source, node.left, offset, custom)
        right = _resolve(source, node.right, offset, custom)
        if right is type(None) or right is None:
            return typing.Optional[left]  # noqa: UP045
        if left is type(None) or left is None:
            return typing.Optional[right]  # noqa: UP045
        return typing.Union[left, right]  # noqa: UP007
    if isinstance(node, ast.Constant) and node.value is None:
        return type(None)
    if isinstance(node, ast.Constant) and node.value is Ellipsis:
        return Ellipsis
    raise fail(f"unsupported type expression {ast.unparse(node)!r}")


def _is_type_like(value: Any) -> bool:
    return (
        isinstance(value, type | types.GenericAlias | types.UnionType)
        or typing.get_origin(value) is not None
        or getattr(value, "__module__", None) in ("typing", "typing_extensions")
    )


def _type_like(value: Any, name: str, fail: Any) -> Any:
    if _is_type_like(value):
        return value
    raise fail(f"{name!r} is not a type (got {type(value).__name__})")


_MISSING: Any = object()


def resolve_simple_name(name: str, first: Mapping[str, Any], second: Mapping[str, Any]) -> Any:
    """What :func:`_resolve` gives for a bare identifier with ``ChainMap(first, second)`` as
    the custom scope, or ``_MISSING`` when that would be an error (the caller then takes the
    full path, which raises it)."""
    if name in first:
        value = first[name]
    elif name in second:
        value = second[name]
    else:
        return _known_names().get(name, _MISSING)
    return value if _is_type_like(value) else _MISSING


def _known_names() -> Mapping[str, Any]:
    """The fixed table: builtins win over typing names, which win over DSPex's."""
    return _KNOWN


class _Known(Mapping[str, Any]):
    def __getitem__(self, name: str) -> Any:
        if name in _BUILTIN_TYPES:
            return _BUILTIN_TYPES[name]
        if name in _TYPING_NAMES:
            return _TYPING_NAMES[name]
        return _LAZY_TYPES[name]

    def __iter__(self) -> Iterator[str]:
        return iter({**dict.fromkeys(_DSPEX_TYPE_MODULES), **_TYPING_NAMES, **_BUILTIN_TYPES})

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __contains__(self, name: object) -> bool:
        return name in _BUILTIN_TYPES or name in _TYPING_NAMES or name in _DSPEX_TYPE_MODULES


_KNOWN = _Known()


def _literal_value(source: str, node: ast.expr, offset: int) -> Any:
    if isinstance(node, ast.Constant) and isinstance(
        node.value, str | int | float | bool | type(None)
    ):
        return node.value
    if (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, ast.USub)
        and isinstance(node.operand, ast.Constant)
        and isinstance(node.operand.value, int | float)
    ):
        return -node.operand.value
    pos = offset + getattr(node, "col_offset", 0) - len(_PREFIX)
    raise _error(source, pos, "Literal values must be constants (strings, numbers, booleans, None)")


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None
