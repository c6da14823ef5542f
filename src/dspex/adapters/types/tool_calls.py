"""``ToolCalls`` (an output type: the calls an LM asked for) and ``ToolCallResults`` (an input type).

Both accept DSPy's shapes and the providers' wire shapes: ``{"name", "args"}``,
``{"name", "arguments"}`` (arguments possibly a JSON string) and OpenAI's
``{"id", "type": "function", "function": {"name", "arguments"}}``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pydantic

from dspex.adapters.types.base_type import Type
from dspex.errors import ToolError, ToolExecutionError

__all__ = ["ToolCallResults", "ToolCalls"]


def _drop_property(schema: dict[str, Any], name: str) -> dict[str, Any]:
    properties = schema.get("properties")
    if isinstance(properties, dict):
        properties.pop(name, None)
    required = schema.get("required")
    if isinstance(required, list):
        schema["required"] = [field for field in required if field != name]
    return schema


def is_tool_call_dict(data: Mapping[str, Any]) -> bool:
    """Whether ``data`` looks like one tool call in any of the accepted shapes."""
    return ("name" in data and ("args" in data or "arguments" in data)) or "function" in data


def normalize_tool_call_dict(data: Any) -> dict[str, Any]:
    """``{"id", "name", "args"}`` from any accepted shape; JSON-string arguments are parsed."""
    if not isinstance(data, dict):
        raise ToolError(f"Received invalid tool call value for `dspy.ToolCalls`: {data}")
    if "function" in data:
        function = data.get("function") or {}
        if not isinstance(function, dict):
            raise ToolError(f"Received invalid function value for `dspy.ToolCalls`: {function}")
        arguments = function.get("arguments", {})
        name = function.get("name") or data.get("name")
    else:
        arguments = data.get("args", data.get("arguments", {}))
        name = data.get("name")
    if isinstance(arguments, str):
        import json_repair

        arguments = json_repair.loads(arguments)  # may be a non-dict: then validation fails
    elif not isinstance(arguments, dict):
        arguments = {}
    return {"id": data.get("id") or data.get("call_id"), "name": name, "args": arguments}


# No class docstrings on these models: pydantic would put them into the JSON schema that
# adapters render into prompts, and DSPy's schema for them has no description.


class ToolCalls(Type):  # the tool calls an LM produced (an output type)
    class ToolCall(Type):
        id: str | None = None
        name: str
        args: dict[str, Any] = pydantic.Field(json_schema_extra={"additionalProperties": True})

        @classmethod
        def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> Any:
            schema = super().__get_pydantic_json_schema__(core_schema, handler)
            return _drop_property(handler.resolve_ref_schema(schema), "id")

        def format(self) -> dict[str, Any]:  # type: ignore[override]
            return {"name": self.name, "args": self.args}

        def execute(
            self, functions: Mapping[str, Callable[..., Any]] | Sequence[Any] | None = None
        ) -> Any:
            """Run this call with the matching function and return its result.

            ``functions`` is a ``{name: function}`` dict, a list of :class:`~dspex.Tool`, or
            ``None`` to look the name up in the caller's locals, then globals.
            """
            func: Any = None
            if functions is None:
                frame = inspect.currentframe()
                caller = frame.f_back if frame is not None else None
                try:
                    if caller is not None:
                        func = caller.f_locals.get(self.name) or caller.f_globals.get(self.name)
                finally:
                    del frame, caller
            elif isinstance(functions, Mapping):
                func = functions.get(self.name)
            else:
                for tool in functions:
                    if tool.name == self.name:
                        func = tool.func
                        break
            if func is None:
                raise ToolError(
                    f"Tool function '{self.name}' not found. Please pass the tool functions "
                    "to the `execute` method.",
                    tool=self.name,
                )
            try:
                return func(**(self.args or {}))
            except Exception as exc:
                raise ToolExecutionError(
                    f"Error executing tool '{self.name}': {exc}", tool=self.name
                ) from exc

    tool_calls: list[ToolCall]
    tool_call_results: Any | None = None

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> Any:
        schema = super().__get_pydantic_json_schema__(core_schema, handler)
        return _drop_property(handler.resolve_ref_schema(schema), "tool_call_results")

    @classmethod
    def from_dict_list(cls, tool_calls_dicts: list[dict[str, Any]]) -> ToolCalls:
        """``ToolCalls`` from ``[{"name": ..., "args": {...}}, ...]`` (any accepted shape)."""
        calls = [cls.ToolCall(**normalize_tool_call_dict(item)) for item in tool_calls_dicts]
        return cls(tool_calls=calls)

    @classmethod
    def description(cls) -> str:
        return (
            "Tool calls must be a JSON object with `tool_calls`, a list of calls. "
            "Each call must include `name` and `args`. "
            'Example: {"tool_calls": [{"name": "search", "args": {"query": "cats"}}]}'
        )

    def format(self) -> dict[str, Any]:  # type: ignore[override]
        return {"tool_calls": [call.format() for call in self.tool_calls]}

    @pydantic.model_serializer()
    def serialize_model(self) -> Any:
        data = self.format()
        if self.tool_call_results is not None:
            results = self.tool_call_results
            data["tool_call_results"] = pydantic.TypeAdapter(type(results)).dump_python(
                results, mode="json"
            )
        return data

    @pydantic.model_validator(mode="before")
    @classmethod
    def validate_input(cls, data: Any) -> Any:
        if isinstance(data, cls):
            return data
        if isinstance(data, list) and all(
            isinstance(item, dict) and is_tool_call_dict(item) for item in data
        ):
            return {"tool_calls": [cls.ToolCall(**normalize_tool_call_dict(i)) for i in data]}
        if isinstance(data, dict):
            if "tool_calls" in data:
                calls = data["tool_calls"]
                if isinstance(calls, list):
                    normalized: dict[str, Any] = {
                        "tool_calls": [
                            cls.ToolCall(**normalize_tool_call_dict(item))
                            if isinstance(item, dict)
                            else item
                            for item in calls
                        ]
                    }
                    if "tool_call_results" in data:
                        normalized["tool_call_results"] = data["tool_call_results"]
                    return normalized
            elif is_tool_call_dict(data):
                return {"tool_calls": [cls.ToolCall(**normalize_tool_call_dict(data))]}
        raise ToolError(f"Received invalid value for `dspy.ToolCalls`: {data}")


class ToolCallResults(pydantic.BaseModel):  # what the tools returned, one entry per call
    class ToolCallResult(pydantic.BaseModel):
        call_id: str | None = None
        name: str
        value: Any
        is_error: bool = False

    tool_call_results: list[ToolCallResult]

    @classmethod
    def from_tool_calls_and_values(
        cls,
        tool_calls: list[ToolCalls.ToolCall] | ToolCalls,
        values: list[Any],
        is_errors: list[bool] | None = None,
    ) -> ToolCallResults:
        """Pair each call with its value (and error flag), keeping the call ids."""
        calls = tool_calls.tool_calls if isinstance(tool_calls, ToolCalls) else tool_calls
        if len(calls) != len(values):
            raise ToolError("`tool_calls` and `values` must have the same length.")
        if is_errors is None:
            is_errors = [False] * len(calls)
        elif len(is_errors) != len(calls):
            raise ToolError("`is_errors` must have the same length as `tool_calls` when provided.")
        return cls(
            tool_call_results=[
                cls.ToolCallResult(call_id=call.id, name=call.name, value=value, is_error=err)
                for call, value, err in zip(calls, values, is_errors, strict=True)
            ]
        )

    @pydantic.model_validator(mode="before")
    @classmethod
    def validate_input(cls, data: Any) -> Any:
        if isinstance(data, cls):
            return data
        if isinstance(data, list):
            return {"tool_call_results": data}
        if isinstance(data, dict) and (
            "tool_call_results" in data or {"name", "value"} <= data.keys()
        ):
            return data if "tool_call_results" in data else {"tool_call_results": [data]}
        raise ToolError(f"Received invalid value for `dspy.ToolCallResults`: {data}")
