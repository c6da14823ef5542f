"""What a completion's choices become, as DSPy's LM returns them, and the Anthropic
Messages API's tool format.

A choice is its text (a ``str``) unless some choice of the reply carries more: then every
choice is a dict with ``text`` and, when present, ``tool_calls`` (OpenAI's shape, Anthropic
``tool_use`` blocks converted to it), ``reasoning_content`` (OpenAI-compatible servers'
field, Anthropic ``thinking`` blocks) and ``logprobs`` (when the request asked for them).
Adapters read these dicts (native function calling, reasoning fields).
"""

from __future__ import annotations

import json
from typing import Any

import orjson

__all__ = [
    "anthropic_outputs",
    "anthropic_tools",
    "openai_outputs",
    "openai_tool_options",
    "openai_tool_turns",
    "openai_tools",
]


def _finish(outputs: list[dict[str, Any]]) -> list[Any]:
    if all(len(output) == 1 for output in outputs):
        return [output["text"] or "" for output in outputs]
    return list(outputs)


def openai_outputs(choices: list[dict[str, Any]], logprobs: bool = False) -> list[Any]:
    """Outputs of a Chat Completions reply's choices (in ``index`` order)."""
    if type(choices) is list and len(choices) == 1 and not logprobs:  # the usual reply
        message = choices[0].get("message") or {}
        if not message.get("reasoning_content") and not message.get("tool_calls"):
            content = message.get("content")
            return ["" if content is None else str(content)]
    outputs: list[dict[str, Any]] = []
    if len(choices) > 1:
        choices = sorted(choices, key=lambda c: c.get("index", 0))
    for choice in choices:
        message = choice.get("message") or {}
        content = message.get("content")
        output: dict[str, Any] = {"text": None if content is None else str(content)}
        if reasoning := message.get("reasoning_content"):
            output["reasoning_content"] = reasoning
        if logprobs:
            output["logprobs"] = choice.get("logprobs")
        if calls := message.get("tool_calls"):
            output["tool_calls"] = calls
        outputs.append(output)
    return _finish(outputs)


def anthropic_outputs(blocks: list[dict[str, Any]]) -> list[Any]:
    """The one output of a Messages API reply's content blocks."""
    text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
    output: dict[str, Any] = {"text": text}
    thinking = "".join(b.get("thinking", "") for b in blocks if b.get("type") == "thinking")
    if thinking:
        output["reasoning_content"] = thinking
    calls = [
        {
            "id": b.get("id"),
            "type": "function",
            "function": {
                "name": b.get("name"),
                "arguments": orjson.dumps(b.get("input") or {}).decode(),
            },
        }
        for b in blocks
        if b.get("type") == "tool_use"
    ]
    if calls:
        output["tool_calls"] = calls
    return _finish([output])


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    if choice is None and parallel is None:
        return None
    if isinstance(choice, dict) and choice.get("type") == "function":
        result: dict[str, Any] = {"type": "tool", "name": choice["function"]["name"]}
    elif choice in ("required", "any"):
        result = {"type": "any"}
    elif choice == "none":
        return {"type": "none"}
    elif isinstance(choice, dict):
        result = dict(choice)  # already Anthropic's shape
    else:
        result = {"type": "auto"}
    if parallel is False:
        result["disable_parallel_tool_use"] = True
    return result


def _tool(spec: dict[str, Any]) -> dict[str, Any]:
    if spec.get("type") != "function":
        return spec  # already Anthropic's shape (or a server tool)
    function = spec.get("function") or {}
    tool = {"name": function.get("name"), "input_schema": function.get("parameters") or {}}
    if function.get("description"):
        tool["description"] = function["description"]
    return tool


def _message(message: dict[str, Any]) -> dict[str, Any]:
    role = message.get("role")
    if role == "tool":
        block = {
            "type": "tool_result",
            "tool_use_id": message.get("tool_call_id"),
            "content": message.get("content") or "",
        }
        return {"role": "user", "content": [block]}
    calls = message.get("tool_calls") if role == "assistant" else None
    if not calls:
        return message
    blocks: list[dict[str, Any]] = []
    if message.get("content"):
        blocks.append({"type": "text", "text": message["content"]})
    for call in calls:
        function = call.get("function") or {}
        arguments = function.get("arguments") or "{}"
        blocks.append({
            "type": "tool_use", "id": call.get("id"), "name": function.get("name"),
            "input": orjson.loads(arguments) if isinstance(arguments, str) else arguments,
        })  # fmt: skip
    return {"role": "assistant", "content": blocks}


def anthropic_tools(
    messages: list[dict[str, Any]], options: dict[str, Any]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """OpenAI-format tools, tool choice and tool-call turns in Anthropic's format
    (``tools[].input_schema``, ``tool_choice`` ``auto/any/tool/none``, ``tool_use`` and
    ``tool_result`` blocks); ``options`` is changed in place."""
    if "tools" in options:
        options["tools"] = [_tool(spec) for spec in options["tools"]]
    choice = _tool_choice(
        options.pop("tool_choice", None), options.pop("parallel_tool_calls", None)
    )
    if choice is not None:
        options["tool_choice"] = choice
    if any(m.get("role") == "tool" or m.get("tool_calls") for m in messages):
        messages = [_message(m) for m in messages]
    return messages, options


_TOOL_KEYS = ("tools", "tool_choice", "parallel_tool_calls")


def _openai_message(message: dict[str, Any]) -> dict[str, Any]:
    role = message.get("role")
    if role == "tool":
        return {k: v for k, v in message.items() if k != "name"}
    calls = message.get("tool_calls") if role == "assistant" else None
    if not calls:
        return message
    replayed = []
    for call in calls:
        function = call.get("function") or {}
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments or "{}")
            except ValueError:
                replayed.append(call)
                continue
        compact = json.dumps(arguments, separators=(",", ":"))
        replayed.append({**call, "function": {**function, "arguments": compact}})
    return {**message, "tool_calls": replayed}


def openai_tool_options(options: dict[str, Any]) -> dict[str, Any]:
    """Request options with ``tools``, ``tool_choice``, ``parallel_tool_calls`` in DSPy's
    order, before ``response_format`` (as its LM writes the payload); ``options`` itself
    when none of them is there."""
    present = [k for k in _TOOL_KEYS if k in options]
    if not present:
        return options
    ordered: dict[str, Any] = {}
    for key, value in options.items():
        if key == "response_format" or (key in present and present[0] not in ordered):
            ordered.update((k, options[k]) for k in present)
        if key not in present:
            ordered[key] = value
    return ordered


def openai_tool_turns(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tool-call turns as DSPy 3.4.1's LM sends them: ``tool`` rows without ``name``,
    replayed call arguments as compact JSON (``messages`` itself when there are none)."""
    for m in messages:
        if m.get("role") == "tool" or m.get("tool_calls"):
            return [_openai_message(m) for m in messages]
    return messages


def openai_tools(
    messages: list[dict[str, Any]], options: dict[str, Any]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Tool-call turns and tool options as DSPy 3.4.1's LM sends them on the Chat Completions
    wire (:func:`openai_tool_turns`, :func:`openai_tool_options`)."""
    return openai_tool_turns(messages), openai_tool_options(options)
