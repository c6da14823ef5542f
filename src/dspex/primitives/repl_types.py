"""REPL value types (DSPy's ``dspy.primitives.repl_types`` path).

What a code-running module shows a model about its REPL: a variable bound in it
(:class:`REPLVariable`), one step taken in it (:class:`REPLEntry`) and the steps so far
(:class:`REPLHistory`). All three are frozen pydantic models whose serialized form is the
text the model reads (``format()``), as DSPy's are.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pydantic

__all__ = ["REPLEntry", "REPLHistory", "REPLVariable"]

_DEFAULT_OUTPUT_CHARS = 10_000


def _head_and_tail(text: str, budget: int, joiner: str) -> str:
    """``text`` cut to ``budget`` characters, keeping its first half and its last."""
    head = budget // 2
    tail = budget - head if budget > 0 else head
    return text[:head] + joiner + text[-tail:]


def _field_meta(field_info: Any) -> tuple[str, str]:
    """The (description, constraints) a signature field carries, placeholders dropped."""
    extra = getattr(field_info, "json_schema_extra", None) or {}
    if not isinstance(extra, dict):
        return "", ""
    desc = extra.get("desc", "") or ""
    if desc.startswith("${"):  # the auto-generated "${name}" placeholder says nothing
        desc = ""
    return desc, extra.get("constraints", "") or ""


class REPLVariable(pydantic.BaseModel):
    """A variable bound in the REPL: its name, type, description and a preview."""

    model_config = pydantic.ConfigDict(frozen=True)

    name: str
    type_name: str
    desc: str = ""
    constraints: str = ""
    total_length: int
    preview: str

    @classmethod
    def from_value(
        cls, name: str, value: Any, field_info: Any = None, preview_chars: int = 1000
    ) -> REPLVariable:
        """Describe ``value`` bound as ``name``: JSON text for containers, ``str`` otherwise,
        previewed head-and-tail when longer than ``preview_chars``."""
        from dspex.adapters.values import serialize_for_json

        plain = serialize_for_json(value)
        text = json.dumps(plain, indent=2) if isinstance(plain, dict | list) else str(plain)
        preview = text if len(text) <= preview_chars else _head_and_tail(text, preview_chars, "...")
        desc, constraints = _field_meta(field_info)
        return cls(
            name=name,
            type_name=type(value).__name__,
            desc=desc,
            constraints=constraints,
            total_length=len(text),
            preview=preview,
        )

    def format(self) -> str:
        """The variable as the prompt shows it."""
        lines = [f"Variable: `{self.name}` (access it in your code)", f"Type: {self.type_name}"]
        if self.desc:
            lines.append(f"Description: {self.desc}")
        if self.constraints:
            lines.append(f"Constraints: {self.constraints}")
        lines.append(f"Total length: {self.total_length:,} characters")
        lines.append(f"Preview:\n```\n{self.preview}\n```")
        return "\n".join(lines)

    @pydantic.model_serializer()
    def _as_text(self) -> str:
        return self.format()


class REPLEntry(pydantic.BaseModel):
    """One step in the REPL: the reasoning, the code run and what it printed."""

    model_config = pydantic.ConfigDict(frozen=True)

    reasoning: str = ""
    code: str
    output: str

    @staticmethod
    def format_output(output: str, max_output_chars: int = _DEFAULT_OUTPUT_CHARS) -> str:
        """The output under a header with its full length; cut in the middle when long."""
        size = len(output)
        if size > max_output_chars:
            omitted = size - max_output_chars
            joiner = f"\n\n... ({omitted:,} characters omitted) ...\n\n"
            output = _head_and_tail(output, max_output_chars, joiner)
        return f"Output ({size:,} chars):\n{output}"

    def format(self, index: int, max_output_chars: int = _DEFAULT_OUTPUT_CHARS) -> str:
        """The step as the prompt shows it (``index`` counts from 0)."""
        reasoning = f"Reasoning: {self.reasoning}\n" if self.reasoning else ""
        return (
            f"=== Step {index + 1} ===\n{reasoning}Code:\n```python\n{self.code}\n```\n"
            + self.format_output(self.output, max_output_chars)
        )


class REPLHistory(pydantic.BaseModel):
    """The steps taken so far; immutable (``append`` returns a new history)."""

    model_config = pydantic.ConfigDict(frozen=True)

    entries: list[REPLEntry] = pydantic.Field(default_factory=list)
    max_output_chars: int = _DEFAULT_OUTPUT_CHARS

    def format(self) -> str:
        if not self.entries:
            return "You have not interacted with the REPL environment yet."
        return "\n".join(
            entry.format(index=i, max_output_chars=self.max_output_chars)
            for i, entry in enumerate(self.entries)
        )

    @pydantic.model_serializer()
    def _as_text(self) -> str:
        return self.format()

    def append(self, *, reasoning: str = "", code: str, output: str) -> REPLHistory:
        entry = REPLEntry(reasoning=reasoning, code=code, output=output)
        return REPLHistory(entries=[*self.entries, entry], max_output_chars=self.max_output_chars)

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[REPLEntry]:  # type: ignore[override]
        return iter(self.entries)

    def __bool__(self) -> bool:
        return bool(self.entries)
