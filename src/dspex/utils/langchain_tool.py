"""LangChain tools as dspex tools (DSPy's ``dspy.utils.langchain_tool`` path).

The conversion lives on :meth:`dspex.Tool.from_langchain`; this gives it DSPy's function name.
``langchain_core`` is needed only by the tools themselves, not to import this module.
"""

from __future__ import annotations

from typing import Any

from dspex.adapters.types.tool import Tool

__all__ = ["convert_langchain_tool"]


def convert_langchain_tool(tool: Any) -> Tool:
    """A :class:`~dspex.Tool` running the LangChain ``BaseTool`` ``tool`` (its ``ainvoke``),
    with its name, description and argument schema."""
    return Tool.from_langchain(tool)
