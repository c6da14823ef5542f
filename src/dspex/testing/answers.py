"""Deterministic, type-correct answers to adapter-formatted prompts (for LMServer and DummyLM).

The prompt tells us everything: ``Your output fields are:`` lists the output fields, and the
field-structure section carries a type note per field (``must be a single int value``,
``must be True or False``, ``must exactly match ... one of: a; b``, ``must adhere to the JSON
schema: {...}``; no note means text). A JSONAdapter prompt gets a JSON object back; a
ChatAdapter prompt gets ``[[ ## field ## ]]`` sections ending with ``[[ ## completed ## ]]``.
The same request always gets the same answer.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

__all__ = [
    "PromptSpec",
    "ToolCallSpec",
    "answer_messages",
    "auto_tool_calls",
    "read_prompt",
    "render_reply",
]

_OUTPUTS = re.compile(r"Your output fields are:\n(.*?)\nAll interactions will be structured", re.S)
_FIELD_LINE = re.compile(r"^\d+\. `(\w+)` \(", re.M)
_NOTE = re.compile(r"^\{(\w+)\} {8}# note: the value you produce (.*)$", re.M)
_JSON_OUTPUTS = "Outputs will be a JSON object with the following fields.\n\n"
_WORDS = (
    "alpha", "bravo", "cedar", "delta", "ember", "fjord", "gamma", "harbor", "indigo", "juniper",
    "kepler", "lumen", "meadow", "nectar", "onyx", "prism", "quartz", "river", "summit", "tundra",
)  # fmt: skip


@dataclass(frozen=True)
class PromptSpec:
    """What a prompt asks for: output field names, their type notes, and the reply format."""

    fields: tuple[str, ...]
    notes: Mapping[str, str]  # read-only by convention (cached specs are shared)
    json_mode: bool
    xml_mode: bool = False


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content blocks
        return "".join(b.get("text", "") for b in content if isinstance(b, dict))
    return ""


def read_prompt(system: str, last_user: str) -> PromptSpec | None:
    """Parse the adapter's system message; ``None`` for a prompt that is not adapter-formatted."""
    return _read_prompt(system, "Respond with a JSON object" in last_user, _XML_HINT in last_user)


@lru_cache(maxsize=256)
def _read_prompt(system: str, json_hint: bool, xml_hint: bool = False) -> PromptSpec | None:
    match = _OUTPUTS.search(system)
    if not match:
        return None
    fields = tuple(_FIELD_LINE.findall(match.group(1)))
    json_mode = _JSON_OUTPUTS in system or json_hint
    notes: dict[str, str] = {}
    if json_mode and _JSON_OUTPUTS in system:
        blob = system.split(_JSON_OUTPUTS, 1)[1]
        blob = blob[: blob.find("\n}") + 2]
        try:
            for name, value in json.loads(blob).items():
                note = _NOTE.match(str(value))
                if note:
                    notes[name] = note.group(2)
        except ValueError:
            pass
    else:
        notes.update({name: note for name, note in _NOTE.findall(system) if name in fields})
    xml_mode = not json_mode and (xml_hint or any(f"\n</{f}>" in system for f in fields))
    return PromptSpec(fields, notes, json_mode, xml_mode)


_dumps_unicode = json.JSONEncoder(ensure_ascii=False).encode
"""``json.dumps(value, ensure_ascii=False)`` without building an encoder per call."""


class _Rng:
    """A tiny deterministic stream of numbers from a seed (no global random state)."""

    def __init__(self, seed: bytes) -> None:
        self._seed = seed
        self._n = 0

    def next(self) -> int:
        self._n += 1
        digest = hashlib.blake2b(self._seed + self._n.to_bytes(4, "big"), digest_size=8).digest()
        return int.from_bytes(digest, "big")


def _from_note(note: str | None, name: str, rng: _Rng) -> Any:
    if not note:
        if name == "reasoning":
            return (
                "Let me think step by step about the " + _WORDS[rng.next() % len(_WORDS)] + " case."
            )
        return f"{_WORDS[rng.next() % len(_WORDS)]} {_WORDS[rng.next() % len(_WORDS)]}"
    if note == "must be True or False":
        return bool(rng.next() % 2)
    if note == "must be a single int value":
        return rng.next() % 100
    if note == "must be a single float value":
        return round((rng.next() % 1000) / 1000, 3)
    for prefix in ("must exactly match (no extra characters) one of: ", "must be one of: "):
        if note.startswith(prefix):
            choices = note[len(prefix) :].split("; ")
            return choices[rng.next() % len(choices)]
    prefix = "must adhere to the JSON schema: "
    if note.startswith(prefix):
        try:
            schema = json.loads(note[len(prefix) :])
        except ValueError:
            return None
        return _from_schema(schema, schema.get("$defs", {}), rng, depth=0)
    return f"{_WORDS[rng.next() % len(_WORDS)]}"


def _from_schema(schema: Mapping[str, Any], defs: Mapping[str, Any], rng: _Rng, depth: int) -> Any:
    if depth > 6:
        return None
    if "$ref" in schema:
        ref = str(schema["$ref"]).rsplit("/", 1)[-1]
        return _from_schema(defs.get(ref, {}), defs, rng, depth + 1)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        options = schema["enum"]
        return options[rng.next() % len(options)] if options else None
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [s for s in schema[key] if s.get("type") != "null"] or schema[key]
            return _from_schema(options[0], defs, rng, depth + 1)
    if schema.get("allOf"):
        return _from_schema(schema["allOf"][0], defs, rng, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "string":
        return _WORDS[rng.next() % len(_WORDS)]
    if kind == "integer":
        return rng.next() % 100
    if kind == "number":
        return round((rng.next() % 1000) / 1000, 3)
    if kind == "boolean":
        return bool(rng.next() % 2)
    if kind == "null":
        return None
    if kind == "array":
        items = schema.get("items", {})
        if "prefixItems" in schema:
            return [_from_schema(s, defs, rng, depth + 1) for s in schema["prefixItems"]]
        count = max(int(schema.get("minItems", 0)), 2)
        return [_from_schema(items, defs, rng, depth + 1) for _ in range(count)]
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        if props:
            return {k: _from_schema(v, defs, rng, depth + 1) for k, v in props.items()}
        extra = schema.get("additionalProperties", {})
        value_schema = extra if isinstance(extra, dict) else {}
        return {f"key{i}": _from_schema(value_schema, defs, rng, depth + 1) for i in (1, 2)}
    return _WORDS[rng.next() % len(_WORDS)]


def _render_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def render_reply(spec: PromptSpec, values: Mapping[str, Any]) -> str:
    """Render field values in the format the prompt asked for."""
    if spec.xml_mode:
        return "\n\n".join(
            f"<{n}>\n{_escape_xml(_render_value(v))}\n</{n}>" for n, v in values.items()
        )
    if spec.json_mode:
        return json.dumps(dict(values), ensure_ascii=False, indent=2)
    parts = [f"[[ ## {name} ## ]]\n{_render_value(value)}" for name, value in values.items()]
    return "\n\n".join([*parts, "[[ ## completed ## ]]"])


def answer_messages(
    messages: Sequence[Mapping[str, Any]], system: str | None = None, choice: int = 0
) -> str:
    """The automatic reply to a chat request (``system`` separately for Anthropic requests)."""
    sys_text = system if system is not None else ""
    for m in messages:
        if m.get("role") == "system":
            sys_text = _text(m.get("content"))
            break
    last_user = ""
    for m in reversed(messages):
        if m.get("role") == "user":
            last_user = _text(m.get("content"))
            break
    seed = hashlib.blake2b(
        _dumps_unicode([sys_text, last_user, choice]).encode(), digest_size=16
    ).digest()
    rng = _Rng(seed)
    spec = read_prompt(sys_text, last_user)
    if spec is None:
        return f"This is a scripted reply about {_WORDS[rng.next() % len(_WORDS)]}."
    values = {name: _from_note(spec.notes.get(name), name, rng) for name in spec.fields}
    _name_tool_calls(values, last_user)
    if spec.xml_mode:
        return _render_xml(spec, values, last_user, rng)
    return render_reply(spec, values)


_TOOL_IN_PROMPT = re.compile(r"(\w+)(?:, whose description is <desc>|\. It takes arguments )")


def _name_tool_calls(values: dict[str, Any], last_user: str) -> None:
    """Text-mode ``ToolCalls`` outputs call a tool the prompt lists (not a made-up name)."""
    with_calls = []
    for value in values.values():
        calls = value.get("tool_calls") if isinstance(value, dict) else None
        if isinstance(calls, list) and calls:
            with_calls.append(value)
    if not with_calls:  # the common case: no prompt scan
        return
    names = _TOOL_IN_PROMPT.findall(last_user)
    if not names:
        return
    for value in with_calls:
        value["tool_calls"] = [{"name": names[0], "args": {}}]


# ---------------------------------------------------------------------------- XML prompts

_XML_HINT = "Respond with the corresponding output fields wrapped in XML tags"
_XML_NESTED = re.compile(r"Use this nested XML structure: (.*)$", re.S)


def _escape_xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;")


def _fill_template(template: str, rng: _Rng) -> str:
    """A nested-XML structure with each ``...`` placeholder replaced by a word."""
    out = []
    for i, piece in enumerate(template.split("...")):
        if i:
            out.append(_WORDS[rng.next() % len(_WORDS)])
        out.append(piece)
    return "".join(out)


def _nested_templates(last_user: str) -> dict[str, str]:
    found = _XML_NESTED.search(last_user)
    if not found:
        return {}
    templates: dict[str, str] = {}
    for match in re.finditer(r"<(\w+)>(.*?)</\1>", found.group(1), re.S):
        templates[match.group(1)] = match.group(0)
    return templates


def _render_xml(spec: PromptSpec, values: Mapping[str, Any], last_user: str, rng: _Rng) -> str:
    """``<field>value</field>`` per output field; nested outputs follow the prompt's structure
    (their leaves get words: the prompt does not say their types)."""
    templates = _nested_templates(last_user)
    parts = []
    for name in spec.fields:
        if name in templates and name not in spec.notes:
            parts.append(_fill_template(templates[name], rng))
            continue
        value = values.get(name)
        text = value if isinstance(value, str) else _render_value(value)
        parts.append(f"<{name}>\n{_escape_xml(text)}\n</{name}>")
    return "\n\n".join(parts)


# ---------------------------------------------------------------------------- tool calls


@dataclass(frozen=True)
class ToolCallSpec:
    """One tool call the server answers with: a tool name and its JSON arguments."""

    name: str
    args: Mapping[str, Any]


def _tool_schemas(body: Mapping[str, Any], provider: str) -> list[tuple[str, Mapping[str, Any]]]:
    """``(name, parameters JSON schema)`` of each tool in an OpenAI or Anthropic request."""
    tools = body.get("tools")
    if not isinstance(tools, list):
        return []
    found: list[tuple[str, Mapping[str, Any]]] = []
    for tool in tools:
        if not isinstance(tool, dict):
            continue
        if provider == "anthropic":
            name, params = tool.get("name"), tool.get("input_schema")
        else:
            fn = tool.get("function") or {}
            name, params = fn.get("name"), fn.get("parameters")
        if isinstance(name, str):
            found.append((name, params if isinstance(params, dict) else {}))
    return found


def _answered_tool_call(messages: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the conversation already holds a tool result after its last user turn."""
    for m in reversed(messages):
        role = m.get("role")
        if role == "tool":
            return True
        content = m.get("content")
        if role == "user":
            return isinstance(content, list) and any(
                isinstance(b, dict) and b.get("type") == "tool_result" for b in content
            )
    return False


def auto_tool_calls(
    body: Mapping[str, Any], provider: str, messages: Sequence[Mapping[str, Any]]
) -> list[ToolCallSpec]:
    """The tool call the server makes on its own: one, to a tool the request offers, unless the
    request forbids tools or already carries a tool result (then the reply is text)."""
    tools = _tool_schemas(body, provider)
    choice = body.get("tool_choice")
    if not tools or choice == "none" or (isinstance(choice, dict) and choice.get("type") == "none"):
        return []
    if _answered_tool_call(messages):
        return []
    seed = hashlib.blake2b(
        json.dumps([messages, [t[0] for t in tools]], ensure_ascii=False, default=str).encode(),
        digest_size=16,
    ).digest()
    rng = _Rng(seed)
    name, params = tools[rng.next() % len(tools)]
    if isinstance(choice, dict):  # a forced tool: {"type": "function", "function": {"name"}}
        forced = (choice.get("function") or {}).get("name") or choice.get("name")
        if forced:
            name, params = next(((n, p) for n, p in tools if n == forced), (name, params))
    props = params.get("properties") or {}
    required = params.get("required") or list(props)
    args = {
        key: _from_schema(props.get(key, {}), params.get("$defs", {}), rng, depth=0)
        for key in required
    }
    return [ToolCallSpec(name, args)]
