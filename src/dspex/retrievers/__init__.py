"""DSPy's ``dspy.retrievers`` layout: retrievers by DSPy's names (routed until native)."""

from __future__ import annotations

from typing import Any

__all__ = ["ColBERTv2", "Embeddings", "Retrieve"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'dspex.retrievers' has no attribute {name!r}")
    import dspex

    return getattr(dspex, name)
