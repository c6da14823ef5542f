"""``dspex.utils.mcp``: MCP tools as dspex tools, against a real in-process MCP server."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from dspex.errors import ToolError, ToolExecutionError
from dspex.utils.mcp import _convert_mcp_tool_result, convert_mcp_tool


def _result(texts: list[str], **fields: Any) -> Any:
    content = [SimpleNamespace(type="text", text=text) for text in texts]
    return SimpleNamespace(content=content, **fields)


def test_text_results_are_one_string_or_a_list() -> None:
    assert _convert_mcp_tool_result(_result(["a"], isError=False)) == "a"
    assert _convert_mcp_tool_result(_result(["a", "b"], is_error=False)) == ["a", "b"]


def test_structured_mode_returns_the_structured_value_even_when_falsy() -> None:
    for value in (0, "", [], {}, None, False):
        got = _convert_mcp_tool_result(
            _result(["text"], structuredContent=value), result_mode="structured"
        )
        assert got == value and type(got) is type(value)
    assert _convert_mcp_tool_result(_result(["text"]), result_mode="structured") == "text"


def test_error_results_raise_with_their_text() -> None:
    with pytest.raises(ToolExecutionError, match="Failed to call a MCP tool: no"):
        _convert_mcp_tool_result(_result(["no"], is_error=True), result_mode="structured")
    assert issubclass(ToolExecutionError, RuntimeError)


def test_unknown_result_mode_is_a_typed_value_error() -> None:
    spec = SimpleNamespace(name="t", description="d", input_schema={})
    with pytest.raises(ToolError, match="Unsupported MCP result mode: 'bytes'"):
        convert_mcp_tool(SimpleNamespace(), spec, result_mode="bytes")  # type: ignore[arg-type]
    assert issubclass(ToolError, ValueError)


async def test_tools_of_a_real_mcp_server_run_through_the_client() -> None:
    pytest.importorskip("mcp")
    from importlib.metadata import version

    if int(version("mcp").split(".")[0]) < 2:
        pytest.skip("the in-process MCP client needs mcp>=2")
    from mcp.client import Client
    from mcp.server import MCPServer

    server = MCPServer("runtime-test")

    @server.tool()
    def scale(value: int, factor: int = 3) -> int:
        """Multiply a value."""
        return value * factor

    @server.tool()
    def refuse() -> str:
        """Always fails."""
        raise ValueError("refused")

    async with Client(server) as client:
        listed = {tool.name: tool for tool in (await client.list_tools()).tools}
        text_tool = convert_mcp_tool(client, listed["scale"])
        structured = convert_mcp_tool(client, listed["scale"], result_mode="structured")
        assert text_tool.name == "scale"
        assert text_tool.desc == "Multiply a value."
        assert text_tool.arg_types == {"value": int, "factor": int}
        assert await text_tool.acall(value=2) == "6"
        assert await structured.acall(value=2, factor=5) == {"result": 10}
        with pytest.raises(ToolExecutionError, match="Failed to call a MCP tool: Error executing"):
            await convert_mcp_tool(client, listed["refuse"]).acall()
