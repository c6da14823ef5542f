"""Adapters: signature + demos + inputs -> chat messages, and LM replies -> field values."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dspex.adapters.base import Adapter
from dspex.adapters.chat import ChatAdapter
from dspex.adapters.json import JSONAdapter
from dspex.adapters.types import History

if TYPE_CHECKING:
    from dspex.adapters.two_step_adapter import TwoStepAdapter
    from dspex.adapters.types import (
        Audio,
        Code,
        File,
        Image,
        Reasoning,
        Tool,
        ToolCallResults,
        ToolCalls,
        Type,
    )
    from dspex.adapters.xml_adapter import XMLAdapter

__all__ = [
    "Adapter",
    "Audio",
    "ChatAdapter",
    "Code",
    "File",
    "History",
    "Image",
    "JSONAdapter",
    "Reasoning",
    "Tool",
    "ToolCallResults",
    "ToolCalls",
    "TwoStepAdapter",
    "Type",
    "XMLAdapter",
]

_FROM_TYPES = frozenset(
    {"Audio", "Code", "File", "Image", "Reasoning", "Tool", "ToolCallResults", "ToolCalls", "Type"}
)


def __getattr__(name: str) -> Any:
    if name == "XMLAdapter":
        from dspex.adapters.xml_adapter import XMLAdapter

        globals()[name] = XMLAdapter
        return XMLAdapter
    if name == "TwoStepAdapter":
        from dspex.adapters.two_step_adapter import TwoStepAdapter

        globals()[name] = TwoStepAdapter
        return TwoStepAdapter
    if name in _FROM_TYPES:
        from dspex.adapters import types

        value = getattr(types, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dspex.adapters' has no attribute {name!r}")
