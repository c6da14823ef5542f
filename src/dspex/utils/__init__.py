"""DSPy's ``dspy.utils`` names: callbacks, test doubles, history printing, async helpers.

Everything is imported on first access, so ``import dspex.utils.callback`` (used by the LM and
the adapters) stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dspex._lazy import lazy_getattr

if TYPE_CHECKING:
    from dspex.streaming.messages import StatusMessage, StatusMessageProvider
    from dspex.utils import exceptions
    from dspex.utils.annotation import experimental
    from dspex.utils.asyncify import asyncify
    from dspex.utils.callback import BaseCallback, with_callbacks
    from dspex.utils.dummies import DummyLM, DummyVectorizer, dummy_rm
    from dspex.utils.inspect_history import pretty_print_history
    from dspex.utils.syncify import syncify

__all__ = [
    "BaseCallback",
    "DummyLM",
    "DummyVectorizer",
    "StatusMessage",
    "StatusMessageProvider",
    "asyncify",
    "dummy_rm",
    "exceptions",
    "experimental",
    "pretty_print_history",
    "syncify",
    "with_callbacks",
]

_WHERE = {
    "BaseCallback": "dspex.utils.callback",
    "with_callbacks": "dspex.utils.callback",
    "DummyLM": "dspex.utils.dummies",
    "DummyVectorizer": "dspex.utils.dummies",
    "dummy_rm": "dspex.utils.dummies",
    "StatusMessage": "dspex.streaming.messages",
    "StatusMessageProvider": "dspex.streaming.messages",
    "asyncify": "dspex.utils.asyncify",
    "syncify": "dspex.utils.syncify",
    "experimental": "dspex.utils.annotation",
    "pretty_print_history": "dspex.utils.inspect_history",
}

_lazy = lazy_getattr("dspex.utils", _WHERE, globals())


def __getattr__(name: str) -> object:
    if name == "exceptions":
        import importlib

        return importlib.import_module("dspex.utils.exceptions")
    return _lazy(name)
