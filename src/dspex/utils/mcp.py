"""MCP tools as dspex tools (DSPy's ``dspy.utils.mcp`` path).

The conversion itself lives on :meth:`dspex.Tool.from_mcp_tool`; this module gives it DSPy's
function names. Works with the ``mcp`` SDK's v1 ``ClientSession`` and v2 ``Client`` (anything
with an async ``call_tool(name, arguments=...)``); ``mcp`` itself is only needed to talk to a
server, not to import this module.
"""

from __future__ import annotations

from typing import Any, Literal

from dspex.adapters.types.tool import MCPToolClient, Tool, _mcp_result

__all__ = ["convert_mcp_tool"]

ResultMode = Literal["text", "structured"]


def convert_mcp_tool(
    session: MCPToolClient, tool: Any, *, result_mode: ResultMode = "text"
) -> Tool:
    """A :class:`~dspex.Tool` calling the MCP ``tool`` through ``session``.

    ``result_mode="text"``: the text content (one string, or a list of them), else the
    non-text parts; ``"structured"``: the structured content when the server set it (even to
    null), else the text result. Another mode raises :class:`~dspex.errors.ToolError` (a
    ``ValueError``).
    """
    return Tool.from_mcp_tool(session, tool, result_mode=result_mode)


def _convert_mcp_tool_result(call_tool_result: Any, result_mode: ResultMode = "text") -> Any:
    """The value a converted tool returns for one ``CallToolResult``; an error result raises
    :class:`~dspex.errors.ToolExecutionError` (a ``RuntimeError``) with its text."""
    return _mcp_result(call_tool_result, result_mode)
