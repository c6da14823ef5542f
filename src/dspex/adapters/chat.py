"""``ChatAdapter``: DSPy's ``[[ ## field ## ]]`` sectioned chat format."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Mapping
from typing import Any, NamedTuple

from dspex.adapters.base import Adapter
from dspex.adapters.values import (
    _loaded,
    format_field_value,
    get_annotation_name,
    get_field_description_string,
    parse_fields,
    sign_parse_error,
    translate_field_type,
)
from dspex.errors import AdapterParseError
from dspex.signatures.field import FieldInfo

__all__ = ["ChatAdapter", "FieldInfoWithName"]


class FieldInfoWithName(NamedTuple):
    """A field's name with its info (the key type of ``format_field_with_value``)."""

    name: str
    info: FieldInfo


_HEADER = re.compile(r"\[\[ ## (\w+) ## \]\]")


def split_sections(completion: str) -> list[tuple[str | None, str]]:
    """``(header, text)`` pairs in order, with DSPy's rules (``str.splitlines`` + ``strip``).

    Plain ASCII text without unusual line breaks whose every marker opens a header takes a
    fast path (:func:`_marker_sections`); it gives the same result because there
    ``splitlines`` is ``split("\\n")`` and ``strip`` removes only spaces and tabs at the edges
    of a header line. Anything else goes line by line, as DSPy does.
    """
    if completion.isascii() and not (
        "\r" in completion  # the line breaks of str.splitlines other than \n (ASCII ones)
        or "\x0b" in completion
        or "\x0c" in completion
        or "\x1c" in completion
        or "\x1d" in completion
        or "\x1e" in completion
        or "\x1f" in completion
    ):
        found = _marker_sections(completion)
        if found is not None:
            return found
    sections: list[tuple[str | None, list[str]]] = [(None, [])]
    for line in completion.splitlines():
        found_header = _HEADER.match(line.strip())
        if found_header:
            rest = line.strip()[found_header.end() :].strip()
            sections.append((found_header.group(1), [rest] if rest else []))
        else:
            sections[-1][1].append(line)
    return [(k, "\n".join(v).strip()) for k, v in sections]


def _marker_sections(completion: str) -> list[tuple[str | None, str]] | None:
    """:func:`split_sections`' fast path for ASCII text whose only line break is ``\\n``, by
    ``str.split`` on the marker (work per header, not per character, unlike a regex scan):
    the sections when every ``[[ ## `` in the text opens a header (at a line start after
    spaces/tabs, an identifier name, `` ## ]]``), else ``None`` (then the lines decide, e.g.
    for a marker inside a line or a name starting with a digit)."""
    pieces = completion.split("[[ ## ")
    before = pieces[0]
    out: list[tuple[str | None, str]] = [(None, before.strip())]
    for piece in pieces[1:]:
        if before and before[-1] != "\n" and before[before.rfind("\n") + 1 :].strip(" \t"):
            return None  # text before the marker on its line: not a header
        name, sep, rest = piece.partition(" ## ]]")
        if not sep or not name.isidentifier():
            return None
        first, _, body = rest.partition("\n")  # DSPy: the header line's rest, then the lines
        if first and (first := first.strip()):
            out.append((name, f"{first}\n{body}".strip() if _ else first))
        else:
            out.append((name, body.strip()))
        before = piece
    return out


class ChatAdapter(Adapter):
    """Sections marked ``[[ ## name ## ]]``; falls back once to JSONAdapter on a parse error.

    Unlike DSPy, the fallback happens only for :class:`AdapterParseError`, never for LM
    errors (a failed LM call is not retried under another format).
    """

    def __init__(
        self,
        callbacks: list[Any] | None = None,
        use_native_function_calling: bool = False,
        native_response_types: list[type] | None = None,
        use_json_adapter_fallback: bool = True,
        parallel_tool_calls: bool | None = None,
    ) -> None:
        super().__init__(
            callbacks=callbacks,
            use_native_function_calling=use_native_function_calling,
            native_response_types=native_response_types,
            parallel_tool_calls=parallel_tool_calls,
        )
        self.use_json_adapter_fallback = use_json_adapter_fallback

    def fallback_adapter(self) -> Adapter | None:
        from dspex.adapters.json import JSONAdapter

        if isinstance(self, JSONAdapter) or not self.use_json_adapter_fallback:
            return None
        return JSONAdapter(
            use_native_function_calling=self.use_native_function_calling,
            parallel_tool_calls=self.parallel_tool_calls,
        )

    # ------------------------------------------------------------------ system message
    def format_field_description(self, signature: Any) -> str:
        return (
            f"Your input fields are:\n{get_field_description_string(signature._input_fields)}\n"
            f"Your output fields are:\n{get_field_description_string(signature._output_fields)}"
        )

    def format_field_structure(self, signature: Any) -> str:
        parts = [
            "All interactions will be structured in the following way, with the appropriate values filled in.",
            self._structure(signature._input_fields),
            self._structure(signature._output_fields),
            "[[ ## completed ## ]]\n",
        ]
        return "\n\n".join(parts).strip()

    def _structure(self, fields: Mapping[str, FieldInfo]) -> str:
        return "\n\n".join(
            f"[[ ## {name} ## ]]\n{translate_field_type(name, info)}"
            for name, info in fields.items()
        ).strip()

    def format_task_description(self, signature: Any) -> str:
        instructions = textwrap.dedent(signature.instructions)
        objective = ("\n" + " " * 8).join(["", *instructions.splitlines()])
        return f"In adhering to this structure, your objective is: {objective}"

    # ------------------------------------------------------------------ messages
    def format_user_message_content(
        self,
        signature: Any,
        inputs: Mapping[str, Any],
        prefix: str = "",
        suffix: str = "",
        main_request: bool = False,
    ) -> str:
        messages = [prefix]
        for name, info in signature._input_fields.items():
            if name in inputs:
                messages.append(f"[[ ## {name} ## ]]\n{format_field_value(info, inputs.get(name))}")
        if main_request:
            messages.append(self.user_message_output_requirements(signature))
        messages.append(suffix)
        return "\n\n".join(messages).strip()

    def user_message_output_requirements(self, signature: Any) -> str:
        key = "chat.requirements"
        cached: str | None = signature._cache.get(key)
        if cached is None:
            parts = ", then ".join(
                f"`[[ ## {f} ## ]]`{_type_info(v)}" for f, v in signature._output_fields.items()
            )
            cached = (
                "Respond with the corresponding output fields, starting with the field "
                f"{parts}, and then ending with the marker for `[[ ## completed ## ]]`."
            )
            signature._cache[key] = cached
        return cached

    def format_assistant_message_content(
        self, signature: Any, outputs: Mapping[str, Any], missing_field_message: str | None = None
    ) -> str:
        body = "\n\n".join(
            f"[[ ## {name} ## ]]\n{format_field_value(info, outputs.get(name, missing_field_message))}"
            for name, info in signature._output_fields.items()
        ).strip()
        return body + "\n\n[[ ## completed ## ]]\n"

    def format_field_with_value(self, fields_with_values: Mapping[Any, Any]) -> str:
        """``[[ ## name ## ]]`` sections for ``{FieldInfoWithName: value}``."""
        return "\n\n".join(
            f"[[ ## {key.name} ## ]]\n{format_field_value(key.info, value)}"
            for key, value in fields_with_values.items()
        ).strip()

    # ------------------------------------------------------------------ parsing
    def parse(self, signature: Any, completion: str) -> dict[str, Any]:
        try:
            return parse_fields(
                "ChatAdapter", signature._output_fields, split_sections(completion), completion
            )
        except AdapterParseError as exc:
            sign_parse_error(exc, signature)
            raise


def _type_info(field: FieldInfo) -> str:
    tool_calls = _loaded("dspex.adapters.types.tool_calls", "ToolCalls")
    if tool_calls is not None and field.annotation is tool_calls:
        return ' (must be a JSON object like {"tool_calls": [{"name": "...", "args": {...}}]})'
    if field.annotation is not str:
        return f" (must be formatted as a valid Python {get_annotation_name(field.annotation)})"
    return ""
