"""DSPy's ``dspy.clients`` layout: LM clients, the usage tracker and the cache switch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dspex._lazy import lazy_getattr

if TYPE_CHECKING:
    from dspex.clients.embedding import Embedder
    from dspex.clients.provider import Provider, TrainingJob
    from dspex.lm import LM, BaseLM
    from dspex.utils.inspect_history import inspect_history
    from dspex.utils.logs import configure_cache

__all__ = [
    "LM",
    "BaseLM",
    "Embedder",
    "Provider",
    "TrainingJob",
    "configure_cache",
    "inspect_history",
]

_WHERE = {
    "LM": "dspex.lm",
    "BaseLM": "dspex.lm",
    "Embedder": "dspex.clients.embedding",
    "Provider": "dspex.clients.provider",
    "TrainingJob": "dspex.clients.provider",
    "configure_cache": "dspex.utils.logs",
    "inspect_history": "dspex.utils.inspect_history",
}

__getattr__ = lazy_getattr("dspex.clients", _WHERE, globals())
