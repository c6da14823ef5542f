"""Value types adapters know about (DSPy's ``dspy.adapters.types`` layout).

``History`` is imported eagerly (the adapters need it on every call); the pydantic-based
custom types and tools are imported on first access so ``import dspex.adapters`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dspex.adapters.types.history import History

if TYPE_CHECKING:
    from dspex.adapters.types.audio import Audio
    from dspex.adapters.types.base_type import Type
    from dspex.adapters.types.citation import Citations, Document
    from dspex.adapters.types.code import Code
    from dspex.adapters.types.file import File
    from dspex.adapters.types.image import Image
    from dspex.adapters.types.reasoning import Reasoning
    from dspex.adapters.types.tool import Tool, ToolCallResults, ToolCalls

__all__ = [
    "Audio",
    "Citations",
    "Code",
    "Document",
    "File",
    "History",
    "Image",
    "Reasoning",
    "Tool",
    "ToolCallResults",
    "ToolCalls",
    "Type",
]

_LAZY: dict[str, str] = {
    "Audio": "dspex.adapters.types.audio",
    "Citations": "dspex.adapters.types.citation",
    "Code": "dspex.adapters.types.code",
    "Document": "dspex.adapters.types.citation",
    "File": "dspex.adapters.types.file",
    "Image": "dspex.adapters.types.image",
    "Reasoning": "dspex.adapters.types.reasoning",
    "Tool": "dspex.adapters.types.tool",
    "ToolCallResults": "dspex.adapters.types.tool",
    "ToolCalls": "dspex.adapters.types.tool",
    "Type": "dspex.adapters.types.base_type",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dspex.adapters.types' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
