"""What a ``Flex`` shows of itself: its signature as source text and as a spec, its tools.

The baseline ``module_src`` names the signature as a string (``"q: str -> a: int"``), so every
annotation is written back in the grammar :mod:`dspex.signatures.parse` reads; a type the
grammar cannot name (an unnamed generic, a class with no identifier) falls back to the bare
field name. The spec and the context blurb are what GEPA's code proposer is shown (DSPy 3.4.1's
``dspy.predict.flex.ctx`` texts, which its requests carry byte for byte).
"""

from __future__ import annotations

import ast
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, get_args, get_origin

__all__ = [
    "FlexContext",
    "is_reserved_sandbox_name",
    "render_annotation",
    "strip_code_fences",
]

_BUILTIN_TYPES = (int, str, float, bool, list, tuple, dict, set, frozenset, complex, bytes, bytearray)  # fmt: skip


def is_reserved_sandbox_name(name: str) -> bool:
    """``dspy`` and the ``_dspy``/``__dspy`` prefixes belong to the sandbox's facade."""
    return name == "dspy" or name.startswith(("_dspy", "__dspy"))


def _tool_name(tool: Any) -> Any:
    return getattr(tool, "name", None) or getattr(tool, "__name__", None)


@dataclass
class FlexContext:
    """A Flex's signature and tools (the tools are reachable by name from its code)."""

    signature_cls: Any
    tools: list[Any] = field(default_factory=list)

    def context_names(self) -> dict[str, Any]:
        """Tool name -> tool; a name the code cannot spell, or one the facade owns, is refused."""
        names: dict[str, Any] = {}
        for tool in self.tools:
            name = _tool_name(tool)
            if not name or not str(name).isidentifier():
                raise ValueError(
                    f"Tool {tool!r} needs a name that is a valid Python identifier — it is "
                    f"referenced by name in the generated code — but got {name!r}. Use a `def` "
                    "function or `dspy.Tool(func, name='my_tool')`."
                )
            if is_reserved_sandbox_name(name):
                raise ValueError(
                    f"Tool name {name!r} is reserved: 'dspy' and names starting with '_dspy' "
                    "belong to the sandbox. Rename it, e.g. `dspy.Tool(func, name='my_tool')`."
                )
            names[name] = tool
        return names

    def custom_types(self) -> dict[str, type]:
        """Every non-builtin class named in the signature's annotations, by name."""
        found: dict[str, type] = {}
        sig = self.signature_cls
        for info in [*sig.input_fields.values(), *sig.output_fields.values()]:
            _collect_types(info.annotation, found)
        return found

    def render_signature_string(self) -> str:
        """``"a: int, b -> c: list[str]"``: the signature as the string grammar spells it."""
        custom = self.custom_types()
        sig = self.signature_cls
        return f"{_side(sig.input_fields, custom)} -> {_side(sig.output_fields, custom)}"

    def render_signature_spec(self) -> str:
        """The signature as GEPA's code proposer reads it: name, objective, fields."""
        sig = self.signature_cls
        objective = getattr(sig, "instructions", "") or ""
        return (
            f"Signature: {getattr(sig, '__name__', 'AnonymousSignature')}\n"
            f"Objective (docstring): {objective}\n"
            f"Input fields:\n{_spec_lines(sig.input_fields)}\n"
            f"Output fields:\n{_spec_lines(sig.output_fields)}\n"
        )

    def render_context_blurb(self, sandboxed: bool = False) -> str:
        """The tools in scope (first docstring line each) and, sandboxed, the bridge's limits."""
        sections: list[str] = []
        if self.tools:
            rows = []
            for tool in self.tools:
                doc = getattr(tool, "desc", None) or getattr(tool, "__doc__", "") or ""
                first = doc.strip().splitlines()[0] if doc.strip() else ""
                rows.append(f"  - {_tool_name(tool) or '?'}: {first}")
            sections.append("Available tools (in scope by name):\n" + "\n".join(rows))
        if sandboxed:
            sections.append(
                "This module runs in a sandbox: only the tools listed above may be passed to "
                "dspy.ReActV2/dspy.RLM (their functions live on the host). A function you define "
                "inside the module can be called directly in forward, but cannot be handed to "
                "those predictors."
            )
        return "\n\n".join(sections) if sections else "(no extra context)"


def _side(fields: Mapping[str, Any], custom: dict[str, type]) -> str:
    parts = []
    for name, info in fields.items():
        try:
            parts.append(f"{name}: {render_annotation(info.annotation, custom)}")
        except ValueError:
            parts.append(name)
    return ", ".join(parts)


def _spec_lines(fields: Mapping[str, Any]) -> str:
    lines = []
    for name, info in fields.items():
        desc = (info.json_schema_extra or {}).get("desc", "")
        line = f"  - {name}: {_readable_type(info.annotation)}"
        if desc and not desc.startswith("${"):
            line += f"  -- {desc}"
        lines.append(line)
    return "\n".join(lines) or "  (none)"


def _readable_type(annotation: Any) -> str:
    if annotation is None:
        return "None"
    name = getattr(annotation, "__name__", None)
    return name if name else str(annotation).replace("typing.", "")


def _collect_types(annotation: Any, found: dict[str, type]) -> None:
    for arg in get_args(annotation):
        _collect_types(arg, found)
    if get_origin(annotation) is not None or annotation is type(None):
        return
    name = getattr(annotation, "__name__", None)
    if (
        isinstance(annotation, type)
        and name
        and name.isidentifier()
        and annotation.__module__ != "builtins"
    ):
        found[name] = annotation


def render_annotation(annotation: Any, custom_types: Mapping[str, type] | None = None) -> str:
    """``annotation`` as a type in the signature-string grammar; ``ValueError`` when the
    grammar has no name for it."""
    return ast.unparse(_type_node(annotation, dict(custom_types or {})))


def _type_node(annotation: Any, custom: dict[str, type]) -> ast.expr:
    if annotation is type(None):
        return ast.Constant(value=None)
    origin = get_origin(annotation)
    if origin is None:
        return _name_node(annotation, custom)
    args = get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        node = _type_node(args[0], custom)
        for arg in args[1:]:
            node = ast.BinOp(left=node, op=ast.BitOr(), right=_type_node(arg, custom))
        return node
    if origin is typing.Literal:
        if not all(v is None or isinstance(v, str | int | bool | bytes) for v in args):
            raise ValueError(
                f"Literal values in {annotation!r} are not signature-string constants."
            )
        return _subscript(ast.Name(id="Literal"), [ast.Constant(value=v) for v in args])
    elements = [ast.Constant(value=...) if a is Ellipsis else _type_node(a, custom) for a in args]
    return _subscript(_type_node(origin, custom), elements)


def _name_node(annotation: Any, custom: dict[str, type]) -> ast.expr:
    name = getattr(annotation, "__name__", None)
    if annotation in _BUILTIN_TYPES:
        return ast.Name(id=annotation.__name__)
    if annotation is Any or (name and typing.__dict__.get(name) is annotation):
        return ast.Name(id=name or "Any")
    if isinstance(annotation, type) and name and custom.get(name) is annotation:
        return ast.Name(id=name)
    raise ValueError(
        f"Annotation {annotation!r} has no name the signature-string grammar can resolve; "
        "pass it via custom_types to make it renderable."
    )


def _subscript(base: ast.expr, elements: list[ast.expr]) -> ast.expr:
    index = ast.Tuple(elts=elements) if len(elements) > 1 else elements[0]
    return ast.Subscript(value=base, slice=index)


def strip_code_fences(text: str | None) -> str:
    """An LM's code reply without a surrounding Markdown fence; tabs as four spaces."""
    body = (text or "").strip()
    if body.startswith("```"):
        newline = body.find("\n")
        if newline != -1:
            body = body[newline + 1 :]
        if body.endswith("```"):
            body = body[:-3]
    return body.strip().expandtabs(4)
