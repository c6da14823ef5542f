"""``dspex.Tool`` / ``ToolCalls`` / ``ToolCallResults`` against DSPy 3.4.1, in process."""

from __future__ import annotations

import asyncio
import enum
from typing import Any

import pydantic
import pytest

import dspex
from dspex.errors import ToolError, ToolExecutionError

dspy = pytest.importorskip("dspy")
pytestmark = pytest.mark.dspy


class Address(pydantic.BaseModel):
    street: str
    zip_code: int = 0


class Person(pydantic.BaseModel):
    name: str
    address: Address
    friends: list[Address] = []


class Mode(enum.Enum):
    FAST = "fast"
    SLOW = "slow"


def add(x: int, y: int = 2) -> int:
    """Add two numbers.

    Second line of the docstring."""
    return x + y


def greet(person: Person, loud: bool = False) -> str:
    text = f"hi {person.name} from {person.address.street}"
    return text.upper() if loud else text


def untyped(a, b="x"):  # type: ignore[no-untyped-def]
    return f"{a}{b}"


def many(items: list[Address], mode: Mode = Mode.FAST, **extra: Any) -> str:
    return f"{len(items)}:{mode.value}:{sorted(extra)}"


def optional(q: str | None = None, n: float = 1.5) -> str:
    return f"{q}{n}"


async def async_search(query: str, k: int = 3) -> list[str]:
    await asyncio.sleep(0)
    return [f"{query}-{i}" for i in range(k)]


class Calculator:
    def __init__(self, base: int) -> None:
        self.base = base

    def times(self, x: int) -> int:
        """Multiply by the base."""
        return self.base * x

    def __call__(self, x: int, label: str = "") -> str:
        """Callable object."""
        return f"{label}{self.base + x}"


FUNCS: list[Any] = [
    add,
    greet,
    untyped,
    many,
    optional,
    async_search,
    Calculator(3).times,
    Calculator(4),
]
OVERRIDES: list[dict[str, Any]] = [
    {},
    {"name": "renamed", "desc": "custom description"},
    {"arg_desc": {"x": "the x", "person": "who", "items": "a list"}},
]


def _pair(func: Any, **kw: Any) -> tuple[Any, Any]:
    return dspy.Tool(func, **kw), dspex.Tool(func, **kw)


@pytest.mark.parametrize("func", FUNCS, ids=lambda f: getattr(f, "__name__", type(f).__name__))
@pytest.mark.parametrize("kw", OVERRIDES, ids=["infer", "named", "arg_desc"])
def test_tool_matches_dspy(func: Any, kw: dict[str, Any]) -> None:
    d, n = _pair(func, **kw)
    assert (n.name, n.desc, n.args, n.has_kwargs) == (d.name, d.desc, d.args, d.has_kwargs)
    assert n.arg_types == d.arg_types
    assert n.format_as_litellm_function_call() == d.format_as_litellm_function_call()
    assert str(n) == str(d)
    assert repr(n) == repr(d)
    assert n.format() == d.format()


def _outcome(fn: Any) -> tuple[str, str]:
    try:
        return ("ok", repr(fn()))
    except Exception as exc:  # compare the message and the exception family
        return ("ValueError" if isinstance(exc, ValueError) else type(exc).__name__, str(exc))


CALLS: list[tuple[Any, dict[str, Any]]] = [
    (add, {"x": 1}),
    (add, {"x": 1, "y": 5}),
    (add, {"x": "one"}),
    (add, {"z": 1}),
    (greet, {"person": {"name": "Ann", "address": {"street": "Main"}}}),
    (greet, {"person": {"name": "Ann", "address": {"street": 5}}}),
    (greet, {"person": {"name": "Ann"}}),
    (
        greet,
        {
            "person": Person(name="Bo", address=Address(street="Elm")),
            "loud": True,
        },
    ),
    (untyped, {"a": [1, 2], "b": {"k": 1}}),
    (many, {"items": [{"street": "a"}], "mode": "slow", "other": 1}),
    (many, {"items": [{"street": 1}]}),
    (many, {"items": [], "mode": "medium"}),
    (optional, {"q": None, "n": 2}),
    (optional, {"n": "x"}),
]


@pytest.mark.parametrize("func,kwargs", CALLS)
def test_calls_validate_and_convert_like_dspy(func: Any, kwargs: dict[str, Any]) -> None:
    d, n = _pair(func)
    assert _outcome(lambda: n(**kwargs)) == _outcome(lambda: d(**kwargs))
    assert _outcome(lambda: asyncio.run(n.acall(**kwargs))) == _outcome(
        lambda: asyncio.run(d.acall(**kwargs))
    )


def test_invalid_arguments_raise_typed_errors() -> None:
    tool = dspex.Tool(add)
    with pytest.raises(ToolError, match="Arg z is not in the tool's args") as info:
        tool(z=1)
    assert info.value.arg == "z"
    with pytest.raises(ToolError, match="Arg x is invalid: 'one' is not of type 'integer'"):
        tool(x="one")


def test_async_tool_sync_call() -> None:
    tool = dspex.Tool(async_search)
    assert asyncio.run(tool.acall(query="q", k=2)) == ["q-0", "q-1"]
    with pytest.raises(ToolError, match="please use `acall` instead"):
        tool(query="q")


def test_async_tool_sync_call_when_allowed() -> None:
    from dspex.errors import ConfigurationError

    try:
        ctx = dspex.context(allow_tool_async_sync_conversion=True)
        ctx.__enter__()
    except ConfigurationError:
        pytest.skip("this settings object has no allow_tool_async_sync_conversion yet")
    try:
        assert dspex.Tool(async_search)(query="q", k=1) == ["q-0"]
    finally:
        ctx.__exit__(None, None, None)


def test_explicit_args_are_kept() -> None:
    args = {"x": {"type": "integer", "description": "given"}}
    d, n = _pair(add, args=args, arg_types={"x": int})
    assert n.args == d.args == args
    assert n.format_as_litellm_function_call() == d.format_as_litellm_function_call()


# ---------------------------------------------------------------------------- ToolCalls

SHAPES: list[Any] = [
    [{"name": "search", "args": {"q": "cats"}}],
    [{"name": "a", "args": {}}, {"name": "b", "arguments": '{"x": 1}'}],
    [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"y": [1]}'}}],
    {"tool_calls": [{"name": "s", "args": {"q": 1}}]},
    {
        "tool_calls": [{"name": "s", "args": {"q": 1}}],
        "tool_call_results": [{"name": "s", "value": 3}],
    },
    {"name": "single", "args": {"z": True}},
    {"name": "broken", "arguments": '{"a": 1'},
    {"call_id": "c9", "name": "x", "arguments": "not json"},
    "garbage",
    [1, 2],
]


@pytest.mark.parametrize("shape", SHAPES)
def test_toolcalls_validate_like_dspy(shape: Any) -> None:
    def build(lib: Any) -> Any:
        calls = lib.ToolCalls.model_validate(shape)
        return (
            [(c.id, c.name, c.args) for c in calls.tool_calls],
            calls.model_dump(),
            calls.format(),
        )

    d, n = _outcome(lambda: build(dspy)), _outcome(lambda: build(dspex))
    assert n[0] == d[0]
    if d[0] == "ok":
        assert n == d


def test_toolcalls_schema_and_description_match() -> None:
    assert dspex.ToolCalls.model_json_schema() == dspy.ToolCalls.model_json_schema()
    assert dspex.ToolCallResults.model_json_schema() == dspy.ToolCallResults.model_json_schema()
    assert dspex.ToolCalls.description() == dspy.ToolCalls.description()


def test_toolcall_execute() -> None:
    calls = dspex.ToolCalls.from_dict_list(
        [{"name": "add", "args": {"x": 1, "y": 2}}, {"name": "missing", "args": {}}]
    )
    first, second = calls.tool_calls
    assert first.execute() == 3  # looked up in the caller's globals
    assert first.execute({"add": lambda x, y: x * y}) == 2
    assert first.execute([dspex.Tool(add)]) == 3
    with pytest.raises(ToolError, match="Tool function 'missing' not found"):
        second.execute()
    with pytest.raises(ToolExecutionError, match="Error executing tool 'add'"):
        first.execute({"add": lambda **_: 1 / 0})


def test_tool_call_results_match_dspy() -> None:
    def build(lib: Any) -> Any:
        calls = lib.ToolCalls.from_dict_list(
            [{"id": "c1", "name": "a", "args": {}}, {"name": "b", "args": {"k": 1}}]
        )
        results = lib.ToolCallResults.from_tool_calls_and_values(
            calls, [1, {"v": 2}], [False, True]
        )
        return results.model_dump()

    assert build(dspex) == build(dspy)
    with pytest.raises(ValueError, match="same length"):
        dspex.ToolCallResults.from_tool_calls_and_values([], [1])
    for shape in ([{"name": "a", "value": 1}], {"name": "a", "value": 1}):
        assert (
            dspex.ToolCallResults.model_validate(shape).model_dump()
            == dspy.ToolCallResults.model_validate(shape).model_dump()
        )


# ---------------------------------------------------------------------------- MCP, LangChain


class _Content(pydantic.BaseModel):
    type: str = "text"
    text: str


class _Result(pydantic.BaseModel):
    content: list[_Content]
    isError: bool = False


class _McpTool(pydantic.BaseModel):
    name: str
    description: str | None
    inputSchema: dict[str, Any]


class _Session:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any] | None]] = []

    async def call_tool(self, name: str, arguments: dict[str, Any] | None = None) -> _Result:
        self.calls.append((name, arguments))
        if arguments and arguments.get("fail"):
            return _Result(content=[_Content(text="boom")], isError=True)
        return _Result(content=[_Content(text=f"{name}:{arguments}")])


def test_from_mcp_tool() -> None:
    spec = _McpTool(
        name="lookup",
        description="Look something up.",
        inputSchema={
            "type": "object",
            "properties": {
                "term": {"type": "string", "description": "what"},
                "limit": {"type": "integer"},
                "fail": {"type": "boolean"},
            },
            "required": ["term"],
        },
    )
    session = _Session()
    tool = dspex.Tool.from_mcp_tool(session, spec)
    from dspy.utils.mcp import convert_mcp_tool

    ref = convert_mcp_tool(session, spec)
    assert (tool.name, tool.desc, tool.args, tool.arg_types, tool.arg_desc) == (
        ref.name,
        ref.desc,
        ref.args,
        ref.arg_types,
        ref.arg_desc,
    )
    assert tool.format_as_litellm_function_call() == ref.format_as_litellm_function_call()
    assert asyncio.run(tool.acall(term="x", limit=2)) == "lookup:{'term': 'x', 'limit': 2}"
    with pytest.raises(ToolExecutionError, match="Failed to call a MCP tool: boom"):
        asyncio.run(tool.acall(term="x", fail=True))
    with pytest.raises(ToolError, match="Unsupported MCP result mode"):
        dspex.Tool.from_mcp_tool(session, spec, result_mode="binary")  # type: ignore[arg-type]


def test_from_langchain() -> None:
    lc_tools = pytest.importorskip("langchain_core.tools")

    @lc_tools.tool
    def multiply(a: int, b: int = 2) -> int:
        """Multiply two numbers."""
        return a * b

    tool = dspex.Tool.from_langchain(multiply)
    ref = dspy.Tool.from_langchain(multiply)
    assert (tool.name, tool.desc, tool.args, tool.arg_desc) == (
        ref.name,
        ref.desc,
        ref.args,
        ref.arg_desc,
    )
    assert asyncio.run(tool.acall(a=3, b=4)) == 12
