"""Adapters: signature + demos + inputs -> chat messages, and LM replies -> field values."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dspex.adapters.base import Adapter
from dspex.adapters.chat import ChatAdapter
from dspex.adapters.json import JSONAdapter
from dspex.adapters.types import History

if TYPE_CHECKING:
    from dspex.adapters.types import Tool, ToolCallResults, ToolCalls, Type

__all__ = [
    "Adapter",
    "ChatAdapter",
    "History",
    "JSONAdapter",
    "Tool",
    "ToolCallResults",
    "ToolCalls",
    "Type",
]

_FROM_TYPES = frozenset({"Tool", "ToolCallResults", "ToolCalls", "Type"})


def __getattr__(name: str) -> Any:
    if name in _FROM_TYPES:
        from dspex.adapters import types

        value = getattr(types, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dspex.adapters' has no attribute {name!r}")
