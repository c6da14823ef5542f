"""Native LM features around one adapter call, as DSPy 3.4.1 plans them (no I/O here).

Before formatting (:func:`plan_native_features`): with ``use_native_function_calling`` and an
LM that supports it, a ``list[Tool]`` input plus a ``ToolCalls`` output become the request's
``tools`` (both fields leave the prompt); custom output types in ``native_response_types``
(``Reasoning``, ``Citations``) may switch to the provider's native feature. After the call
(:func:`completion_values`): provider tool calls become a ``ToolCalls`` value, native
reasoning/citations are read from the response, logprobs are kept.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any, get_origin

from dspex.adapters.capabilities import capabilities
from dspex.adapters.values import apply_output_field_defaults, parse_error
from dspex.errors import AdapterParseError, UserError

__all__ = [
    "completion_values",
    "history_tool_turn",
    "plan_native_features",
    "tool_fields",
    "without_fields",
]

_TOOL_OPTIONS = ("tools", "tool_choice", "parallel_tool_calls")
_TOOL_MODULE = "dspex.adapters.types.tool"


def _tool_types() -> tuple[Any, Any]:
    """``(Tool, ToolCalls)`` if the tool module was imported (no value can be one otherwise)."""
    tool = sys.modules.get(_TOOL_MODULE)
    if tool is None:
        return None, None
    return tool.Tool, tool.ToolCalls


def tool_fields(signature: Any) -> tuple[str | None, str | None]:
    """The ``list[Tool]``/``Tool`` input field and the ``ToolCalls`` output field, if any."""
    tool, tool_calls = _tool_types()
    if tool is None:
        return None, None
    tool_input = None
    for name, info in signature._input_fields.items():
        annotation = info.annotation
        if annotation == tool or (
            get_origin(annotation) is list and annotation.__args__[0] == tool
        ):
            tool_input = name
            break
    tool_output = next(
        (n for n, f in signature._output_fields.items() if f.annotation == tool_calls), None
    )
    return tool_input, tool_output


def without_fields(signature: Any, *names: str) -> Any:
    """``signature`` with ``names`` deleted, built once per signature (kept in its ``_cache``,
    which is cleared whenever the signature changes): every call of an agent's Predict renders
    the same signature without its tool and history fields."""
    key = "without:" + ",".join(names)
    cached = signature._cache.get(key)
    if cached is None:
        cached = signature
        for name in names:
            cached = cached.delete(name)
        signature._cache[key] = cached
    return cached


def _native_output_fields(signature: Any, native_types: list[Any]) -> list[tuple[str, Any]]:
    from dspex.adapters.types.base_type import Type

    return [
        (name, info.annotation)
        for name, info in signature._output_fields.items()
        if isinstance(info.annotation, type)
        and info.annotation in native_types
        and issubclass(info.annotation, Type)
    ]


def plan_native_features(
    adapter: Any, lm: Any, lm_kwargs: dict[str, Any], signature: Any, inputs: Mapping[str, Any]
) -> Any:
    """The signature to render; ``lm_kwargs`` is updated in place (tools, reasoning...)."""
    if not adapter.use_native_function_calling:
        if lm_kwargs and not lm_kwargs.keys().isdisjoint(_TOOL_OPTIONS):
            for key in _TOOL_OPTIONS:
                lm_kwargs.pop(key, None)
    else:
        tool_input, tool_output = tool_fields(signature)
        if tool_output and tool_input is None:
            raise UserError(
                f"You provided an output field {tool_output} to receive the tool calls "
                "information, but did not provide any tools as the input. Please provide a list "
                "of tools as the input by adding an input field with type `list[dspy.Tool]`."
            )
        if tool_output and tool_input and capabilities(lm).function_calling:
            tools = inputs[tool_input]
            tools = tools if isinstance(tools, list) else [tools]
            lm_kwargs["tools"] = [t.format_as_litellm_function_call() for t in tools]
            if (
                adapter.parallel_tool_calls is not None
                and lm_kwargs.get("parallel_tool_calls") is None
            ):
                lm_kwargs["parallel_tool_calls"] = adapter.parallel_tool_calls
            signature = without_fields(signature, tool_output, tool_input)
        elif tool_output:
            for key in _TOOL_OPTIONS:
                lm_kwargs.pop(key, None)
    if lm is not None and "dspex.adapters.types.base_type" in sys.modules:
        native_types = adapter.native_response_types
        for name, annotation in _native_output_fields(signature, native_types):
            signature = annotation.adapt_to_native_lm_feature(signature, name, lm, lm_kwargs)
    return signature


def _field(value: Any, key: str, default: Any = None) -> Any:
    return value.get(key, default) if isinstance(value, dict) else getattr(value, key, default)


def provider_tool_call(tool_call: Any) -> dict[str, Any]:
    """``{"id", "name", "args"}`` from an OpenAI chat/Responses-API tool call (dict or object)."""
    function = _field(tool_call, "function", {}) or {}
    arguments = _field(function, "arguments", None) or _field(tool_call, "arguments", {})
    if isinstance(arguments, str):
        import json_repair

        arguments = json_repair.loads(arguments)
    elif not isinstance(arguments, dict):
        arguments = {}
    return {
        "id": _field(tool_call, "call_id") or _field(tool_call, "id"),
        "name": _field(function, "name") or _field(tool_call, "name"),
        "args": arguments,
    }


def completion_values(
    adapter: Any,
    rendered: Any,
    original: Any,
    output: Any,
    parse: Callable[[Any, str], dict[str, Any]],
) -> dict[str, Any]:
    """The output values of one completion (a text, or a dict with text/tool_calls/logprobs)."""
    # no ToolCalls field can exist unless the tool module was imported (two frames less)
    tool_output = tool_fields(original)[1] if _TOOL_MODULE in sys.modules else None
    text: Any = output
    logprobs: Any = None
    tool_calls: Any = None
    if isinstance(output, dict):
        text = output.get("text")
        logprobs = output.get("logprobs")
        tool_calls = output.get("tool_calls")
    native_tools = bool(tool_calls and tool_output)
    if text and not native_tools:
        value = parse(rendered, text)
    elif native_tools:
        try:
            value = parse(rendered, text) if text and rendered._output_fields else {}
        except AdapterParseError:
            value = {}
    else:
        raise parse_error(
            type(adapter).__name__,
            str(output),
            original._output_fields,
            message="The LM returned an empty or null response.",
        )
    outputs = original._output_fields
    if [*value] != [*outputs]:  # not every field, in order: defaults and None fill in
        value = apply_output_field_defaults(outputs, value)
        for name in outputs:
            value.setdefault(name, None)
    if native_tools and tool_calls and tool_output:
        _, tool_calls_type = _tool_types()
        calls = [provider_tool_call(call) for call in tool_calls]
        value[tool_output] = tool_calls_type.from_dict_list(calls)
    if isinstance(output, dict) and "dspex.adapters.types.base_type" in sys.modules:
        native_types = adapter.native_response_types
        for name, annotation in _native_output_fields(original, native_types):
            parsed = annotation.parse_lm_response(output)
            if parsed is not None:
                value[name] = parsed
    if logprobs:
        value["logprobs"] = logprobs
    return value


# ---------------------------------------------------------------------------- history turns


def _history_tool_calls(message: Mapping[str, Any]) -> tuple[str | None, Any]:
    from dspex.adapters.types.tool import ToolCalls

    for name, value in message.items():
        if isinstance(value, ToolCalls) or (isinstance(value, dict) and "tool_calls" in value):
            return name, ToolCalls.model_validate(value)
    return None, None


def _result_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    import json

    from dspex.adapters.values import serialize_for_json

    return json.dumps(serialize_for_json(value), ensure_ascii=False)


def _openai_tool_call(call: Any) -> dict[str, Any]:
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": _result_text(call.args)},
    }


_RESULTS_SIGNATURE: list[Any] = []


def _results_signature() -> Any:
    if not _RESULTS_SIGNATURE:
        from dspex.adapters.types.tool import ToolCallResults
        from dspex.signatures import InputField, make_signature

        _RESULTS_SIGNATURE.append(
            make_signature({"tool_call_results": (ToolCallResults, InputField())})
        )
    return _RESULTS_SIGNATURE[0]


def history_tool_turn(
    adapter: Any, signature: Any, message: Mapping[str, Any]
) -> list[dict[str, Any]] | None:
    """The assistant side of a history turn that holds tool calls (``None``: it holds none).

    With native function calling the calls (and their results, when every call has an id
    matching its result) replay as ``tool_calls`` and ``tool`` messages; otherwise they stay
    text, with the results in a following user message.
    """
    from dspex.adapters.types.tool import ToolCallResults, ToolCalls

    field_name, calls = _history_tool_calls(message)
    if calls is None:
        return None
    results = (
        ToolCallResults.model_validate(calls.tool_call_results)
        if calls.tool_call_results is not None
        else None
    )
    out: list[dict[str, Any]] = []
    if adapter.use_native_function_calling:
        content_sig = signature
        for name, info in signature._output_fields.items():
            if info.annotation == ToolCalls or message.get(name) is None:
                content_sig = content_sig.delete(name)
        content = (
            adapter.format_assistant_message_content(content_sig, message)
            if content_sig._output_fields
            else ""
        )
        if results is not None:
            ids = [c.id for c in calls.tool_calls]
            if ids != [r.call_id for r in results.tool_call_results] or not all(ids):
                results = None
        if content or results is not None:
            reply: dict[str, Any] = {"role": "assistant", "content": content or None}
            if results is not None:
                reply["tool_calls"] = [_openai_tool_call(c) for c in calls.tool_calls]
            out.append(reply)
        if results is not None:
            out.extend(
                {
                    "role": "tool",
                    "tool_call_id": r.call_id,
                    "name": r.name,
                    "content": _result_text(r.value),
                }
                for r in results.tool_call_results
            )
        return out
    values: Mapping[str, Any] = message
    if field_name is not None and results is not None:
        values = dict(message)
        values[field_name] = calls.model_copy(update={"tool_call_results": None})
    assistant = adapter.format_assistant_message_content(signature, values)
    if assistant:
        out.append({"role": "assistant", "content": assistant})
    if results is not None:
        content = adapter.format_user_message_content(
            _results_signature(), {"tool_call_results": results}
        )
        out.append({"role": "user", "content": content})
    return out
