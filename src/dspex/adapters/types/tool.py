"""``Tool``: a function an LM may call, with its name, description and JSON-schema arguments.

Same construction, validation, error text and function-calling format as ``dspy.Tool``
(DSPy 3.4.1): arguments are inferred from type hints (pydantic models become their JSON
schema with ``$ref`` inlined), checked against that schema before the call, and converted to
the annotated Python types. MCP and LangChain tools convert natively.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
from collections.abc import Callable, Coroutine
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_origin, get_type_hints

import pydantic

from dspex.adapters.types.base_type import Type
from dspex.adapters.types.tool_calls import ToolCallResults, ToolCalls
from dspex.errors import ToolError, ToolExecutionError
from dspex.utils.callback import with_callbacks

if TYPE_CHECKING:
    from collections.abc import Awaitable

__all__ = [
    "Tool",
    "ToolCallResults",
    "ToolCalls",
    "convert_input_schema_to_tool_args",
    "resolve_json_schema_reference",
]

_TYPE_MAPPING: dict[str, Any] = {
    "string": str,
    "integer": int,
    "number": float,
    "boolean": bool,
    "array": list,
    "object": dict,
}


class MCPToolClient(Protocol):
    """What :meth:`Tool.from_mcp_tool` needs of an MCP session/client."""

    def call_tool(self, name: str, arguments: dict[str, Any] | None = None) -> Awaitable[Any]: ...


class Tool(Type):
    """A callable the LM can use: ``Tool(func, name=, desc=, args=, arg_types=, arg_desc=)``.

    Anything not given is inferred from ``func`` (a function, method, or callable object):
    ``name`` from ``__name__``, ``desc`` from the docstring, ``args`` (JSON schema per
    argument) and ``arg_types`` from the type hints. ``tool(**kwargs)`` and
    ``await tool.acall(**kwargs)`` validate the arguments, convert them to the annotated
    types, then call ``func``.
    """

    func: Callable[..., Any]
    name: str | None = None
    desc: str | None = None
    args: dict[str, Any] | None = None
    arg_types: dict[str, Any] | None = None
    arg_desc: dict[str, str] | None = None
    has_kwargs: bool = False

    def __init__(
        self,
        func: Callable[..., Any],
        name: str | None = None,
        desc: str | None = None,
        args: dict[str, Any] | None = None,
        arg_types: dict[str, Any] | None = None,
        arg_desc: dict[str, str] | None = None,
    ) -> None:
        fields = {"func": func, "name": name, "desc": desc, "args": args}
        fields.update(arg_types=arg_types, arg_desc=arg_desc)
        pydantic.BaseModel.__init__(self, **fields)
        self._infer_from_function(func, arg_desc)

    def _infer_from_function(
        self, func: Callable[..., Any], arg_desc: dict[str, str] | None
    ) -> None:
        target: Any = func if inspect.isfunction(func) or inspect.ismethod(func) else func.__call__  # type: ignore[operator]
        name = getattr(func, "__name__", type(func).__name__)
        desc = getattr(func, "__doc__", None) or getattr(target, "__doc__", "")
        sig = inspect.signature(target)
        hints = get_type_hints(target)
        args: dict[str, Any] = {}
        arg_types: dict[str, Any] = {}
        for pname, param in sig.parameters.items():
            annotation = hints.get(pname, Any)
            arg_types[pname] = annotation
            schema = _argument_schema(annotation)
            if param.default is not inspect.Parameter.empty:
                schema["default"] = _to_json_default(param.default)
            if arg_desc and pname in arg_desc:
                schema["description"] = arg_desc[pname]
            args[pname] = schema
        self.name = self.name or name
        self.desc = self.desc or desc
        self.args = self.args if self.args is not None else args
        self.arg_types = self.arg_types if self.arg_types is not None else arg_types
        self.has_kwargs = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())

    # ------------------------------------------------------------------ calling
    def _validate_and_parse_args(self, **kwargs: Any) -> dict[str, Any]:
        """Check ``kwargs`` against the JSON schemas, then convert them to ``arg_types``."""
        args = self.args or {}
        for key, value in kwargs.items():
            if key not in args:
                if self.has_kwargs:
                    continue
                raise ToolError(f"Arg {key} is not in the tool's args.", tool=self.name, arg=key)
            schema = args[key]
            type_str = schema.get("type")
            if type_str is None or type_str == "Any":
                continue
            instance = value.model_dump() if hasattr(value, "model_dump") else value
            error = _schema_error(instance, schema)
            if error is not None:
                raise ToolError(f"Arg {key} is invalid: {error}", tool=self.name, arg=key)
        arg_types = self.arg_types or {}
        parsed: dict[str, Any] = {}
        for key, value in kwargs.items():
            annotation = arg_types.get(key, Any)
            parsed[key] = value if annotation is Any else _coerce(annotation, value)
        return parsed

    @with_callbacks
    def __call__(self, **kwargs: Any) -> Any:
        result = self.func(**self._validate_and_parse_args(**kwargs))
        if not asyncio.iscoroutine(result):
            return result
        if not _allow_async_sync_conversion():
            result.close()
            raise ToolError(
                "You are calling `__call__` on an async tool, please use `acall` instead or enable "
                "async-to-sync conversion with `dspy.configure(allow_tool_async_sync_conversion=True)` "
                "or `with dspy.context(allow_tool_async_sync_conversion=True):`.",
                tool=self.name,
            )
        return _run_coroutine_sync(result, self.name)

    @with_callbacks
    async def acall(self, **kwargs: Any) -> Any:
        result = self.func(**self._validate_and_parse_args(**kwargs))
        if asyncio.iscoroutine(result):
            return await result
        return result  # a sync tool is fine on the async path

    # ------------------------------------------------------------------ formats
    def format(self) -> str:
        return str(self)

    def format_as_litellm_function_call(self) -> dict[str, Any]:
        """The OpenAI/litellm ``tools`` entry for this tool (as DSPy sends it)."""
        args = self.args or {}
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.desc,
                "parameters": {
                    "type": "object",
                    "properties": args,
                    "required": [k for k in args if "default" not in args[k]],
                },
            },
        }

    def __repr__(self) -> str:
        return f"Tool(name={self.name}, desc={self.desc}, args={self.args})"

    def __str__(self) -> str:
        desc = (
            f", whose description is <desc>{self.desc}</desc>.".replace("\n", "  ")
            if self.desc
            else "."
        )
        return f"{self.name}{desc} It takes arguments {self.args}."

    # ------------------------------------------------------------------ other tool kinds
    @classmethod
    def from_mcp_tool(
        cls,
        session: MCPToolClient,
        tool: Any,
        *,
        result_mode: Literal["text", "structured"] = "text",
    ) -> Tool:
        """A tool that calls ``tool`` (an ``mcp.types.Tool``) through ``session.call_tool``.

        ``result_mode="text"`` returns the text content (one string, or a list of them) or
        the non-text parts; ``"structured"`` returns the structured content when present.
        """
        if result_mode not in ("text", "structured"):
            raise ToolError(f"Unsupported MCP result mode: {result_mode!r}")
        schema = _field(tool, "input_schema", "inputSchema", {}) or {}
        args, arg_types, arg_desc = convert_input_schema_to_tool_args(schema)
        name = tool.name

        async def func(*_: Any, **kwargs: Any) -> Any:
            result = await session.call_tool(name, arguments=kwargs)
            return _mcp_result(result, result_mode)

        return cls(
            func=func,
            name=name,
            desc=tool.description,
            args=args,
            arg_types=arg_types,
            arg_desc=arg_desc,
        )

    @classmethod
    def from_langchain(cls, tool: Any) -> Tool:
        """A tool that runs a LangChain ``BaseTool`` through its ``ainvoke``."""

        async def func(**kwargs: Any) -> Any:
            try:
                return await tool.ainvoke(kwargs)
            except Exception as exc:
                raise ToolExecutionError(
                    f"Failed to call LangChain tool {tool.name}: {exc!s}", tool=tool.name
                ) from exc

        schema_model = tool.args_schema
        args, _, arg_desc = convert_input_schema_to_tool_args(schema_model.model_json_schema())
        arg_types = {
            key: field.annotation if field.annotation is not None else Any
            for key, field in schema_model.model_fields.items()
        }
        return cls(
            func=func,
            name=tool.name,
            desc=tool.description,
            args=args,
            arg_types=arg_types,
            arg_desc=arg_desc,
        )


# ---------------------------------------------------------------------------- helpers


def _allow_async_sync_conversion() -> bool:
    from dspex.settings import current

    return bool(getattr(current(), "allow_tool_async_sync_conversion", False))


def _run_coroutine_sync(coroutine: Coroutine[Any, Any, Any], name: str | None) -> Any:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    coroutine.close()
    raise ToolError(
        "You are calling `__call__` on an async tool from within a running event loop, which "
        "cannot be converted to a sync call, even with `allow_tool_async_sync_conversion` "
        "enabled. Please use `await tool.acall(...)` instead.",
        tool=name,
    )


def _argument_schema(annotation: Any) -> dict[str, Any]:
    origin = get_origin(annotation) or annotation
    if isinstance(origin, type) and issubclass(origin, pydantic.BaseModel):
        raw = annotation.model_json_schema()
    else:
        raw = pydantic.TypeAdapter(annotation).json_schema()
    return resolve_json_schema_reference(raw)


_WRAPPERS: dict[Any, type[pydantic.BaseModel]] = {}


def _coerce(annotation: Any, value: Any) -> Any:
    """``value`` validated as ``annotation`` (nested models included) through a one-field model."""
    try:
        wrapper = _WRAPPERS.get(annotation)
    except TypeError:  # unhashable annotation
        wrapper = None
    if wrapper is None:
        wrapper = pydantic.create_model("Wrapper", value=(annotation, ...))
        try:
            _WRAPPERS[annotation] = wrapper
        except TypeError:
            pass
    return wrapper.model_validate({"value": value}).value  # type: ignore[attr-defined]


_VALIDATORS: dict[str, Any] = {}


def _schema_error(instance: Any, schema: dict[str, Any]) -> str | None:
    """The JSON-schema validation message for ``instance``, or ``None`` when it is valid.

    The same message as ``jsonschema.validate`` (its best-matching error), with the checked
    validator cached per schema: checking the schema itself is most of ``validate``'s cost.
    """
    jsonschema: Any = importlib.import_module("jsonschema")  # untyped; imported on first use
    key = json.dumps(schema, sort_keys=True, default=repr)
    validator = _VALIDATORS.get(key)
    if validator is None:
        if len(_VALIDATORS) > 1024:
            _VALIDATORS.clear()
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
        validator = _VALIDATORS[key] = cls(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(instance))
    return None if error is None else str(error.message)


def _to_json_default(value: Any) -> Any:
    """A parameter default in JSON form (an Enum member becomes its value)."""
    if isinstance(value, Decimal):
        return float(value)  # a JSON number fits float and Decimal arguments alike
    import pydantic_core

    try:
        return pydantic_core.to_jsonable_python(value)
    except Exception:
        return value


def resolve_json_schema_reference(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with every ``$ref`` replaced by its definition and ``$defs`` removed."""
    if "$defs" not in schema and "definitions" not in schema:
        return schema
    defs = schema.get("$defs", {})

    def inline(obj: Any) -> Any:
        if isinstance(obj, dict):
            if "$ref" in obj:
                return inline(defs[obj["$ref"].split("/")[-1]])
            return {k: inline(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [inline(item) for item in obj]
        return obj

    resolved: dict[str, Any] = inline(schema)
    resolved.pop("$defs", None)
    return resolved


def convert_input_schema_to_tool_args(
    schema: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """``(args, arg_types, arg_desc)`` for a tool from a JSON schema of its input object."""
    args: dict[str, Any] = {}
    arg_types: dict[str, Any] = {}
    arg_desc: dict[str, str] = {}
    properties = schema.get("properties")
    if properties is None:
        return args, arg_types, arg_desc
    required = schema.get("required", [])
    defs = schema.get("$defs", {})
    for name, prop in properties.items():
        if defs:
            prop = resolve_json_schema_reference({"$defs": defs, **prop})
        args[name] = prop
        arg_types[name] = _TYPE_MAPPING.get(prop.get("type"), Any)
        arg_desc[name] = prop.get("description", "No description provided.")
        if name in required:
            arg_desc[name] += " (Required)"
    return args, arg_types, arg_desc


def _field(obj: Any, snake: str, camel: str, default: Any = None) -> Any:
    """A field whose Python name differs between mcp SDK versions (snake vs camel case)."""
    for name in (snake, camel):
        if hasattr(obj, name):
            return getattr(obj, name)
    return default


def _field_is_set(obj: Any, snake: str, camel: str) -> bool:
    fields_set = getattr(obj, "model_fields_set", None)
    if fields_set is None:
        fields_set = getattr(obj, "__fields_set__", None)
    if fields_set is not None:
        return snake in fields_set or camel in fields_set
    return hasattr(obj, snake) or hasattr(obj, camel)


def _mcp_result(result: Any, result_mode: str) -> Any:
    texts: list[str] = []
    others: list[Any] = []
    for content in result.content:
        if getattr(content, "type", None) == "text" and hasattr(content, "text"):
            texts.append(content.text)
        else:
            others.append(content)
    text_content: Any = texts[0] if len(texts) == 1 else texts
    if _field(result, "is_error", "isError", False):
        raise ToolExecutionError(f"Failed to call a MCP tool: {text_content}")
    if result_mode == "structured" and _field_is_set(
        result, "structured_content", "structuredContent"
    ):
        return _field(result, "structured_content", "structuredContent")
    return text_content or others
