"""The markers around a custom type's content parts inside rendered text, and their expansion.

A :class:`~dspex.adapters.types.base_type.Type` whose ``format()`` gives content parts is
rendered as ``<<CUSTOM-TYPE-START-IDENTIFIER>>[...json parts...]<<CUSTOM-TYPE-END-IDENTIFIER>>``.
After formatting, each user message holding markers becomes a list of content parts (DSPy
3.4.1's rules). No pydantic here: the adapters import this on every call.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = [
    "CUSTOM_TYPE_END_IDENTIFIER",
    "CUSTOM_TYPE_START_IDENTIFIER",
    "expand_custom_type_markers",
    "split_message_content_for_custom_types",
]

CUSTOM_TYPE_START_IDENTIFIER = "<<CUSTOM-TYPE-START-IDENTIFIER>>"
CUSTOM_TYPE_END_IDENTIFIER = "<<CUSTOM-TYPE-END-IDENTIFIER>>"
_BLOCK = re.compile(
    rf"{re.escape(CUSTOM_TYPE_START_IDENTIFIER)}(.*?){re.escape(CUSTOM_TYPE_END_IDENTIFIER)}",
    re.DOTALL,
)


def _doubly_quoted(text: str) -> Any:
    # a Type nested in a list/dict is JSON-encoded twice
    return json.loads(json.loads(f'"{text}"'))


def _repaired(text: str) -> Any:
    import json_repair

    return json_repair.loads(text)


_PARSERS = (json.loads, _doubly_quoted, _repaired)


def _parse_payload(payload: str) -> Any:
    for parse in _PARSERS:
        try:
            return parse(payload)
        except Exception:
            continue
    return None


def _parts(payload: str) -> list[dict[str, Any]]:
    parsed = _parse_payload(payload)
    if isinstance(parsed, list):
        return [p if isinstance(p, dict) else {"type": "text", "text": str(p)} for p in parsed]
    return [{"type": "text", "text": payload}]


def expand_custom_type_markers(message: dict[str, Any]) -> dict[str, Any]:
    """A copy of a user message whose string content has markers, as a list of content parts."""
    content = message.get("content")
    if message.get("role") != "user" or not isinstance(content, str):
        return message
    if CUSTOM_TYPE_START_IDENTIFIER not in content:
        return message
    blocks: list[dict[str, Any]] = []
    last_end = 0
    for match in _BLOCK.finditer(content):
        start, end = match.span()
        if start > last_end:
            blocks.append({"type": "text", "text": content[last_end:start]})
        blocks.extend(_parts(match.group(1).strip()))
        last_end = end
    if last_end < len(content):
        blocks.append({"type": "text", "text": content[last_end:]})
    return {**message, "content": blocks}


def split_message_content_for_custom_types(
    messages: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """DSPy's older in-place splitter (kept for code that calls it): same cuts, stricter parse."""
    for message in messages:
        content = message.get("content")
        if message.get("role") != "user" or not isinstance(content, str):
            continue
        parts: list[Any] = []
        last_end = 0
        for match in _BLOCK.finditer(content):
            start, end = match.span()
            if start > last_end:
                parts.append({"type": "text", "text": content[last_end:start]})
            inner = match.group(1).strip()
            parsed = None
            for parse in _PARSERS:
                try:
                    parsed = parse(inner)
                    break
                except json.JSONDecodeError:
                    continue
            if parsed:
                parts.extend(parsed)
            else:
                parts.append({"type": "text", "text": inner})
            last_end = end
        if last_end == 0:
            continue
        if last_end < len(content):
            parts.append({"type": "text", "text": content[last_end:]})
        message["content"] = parts
    return messages
