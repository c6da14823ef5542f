"""Test doubles that speak the real protocols: ``LMServer`` (HTTP) and ``DummyLM`` (in process).

Use them in your own tests::

    from dspex.testing import LMServer
    with LMServer() as server:
        lm = dspex.LM("openai/test", api_base=server.url, api_key="test")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dspex.testing.dummy import DummyLM
    from dspex.testing.server import Fault, LMServer, RecordedRequest

__all__ = ["DummyLM", "Fault", "LMServer", "RecordedRequest"]

_WHERE = {
    "DummyLM": "dspex.testing.dummy",
    "Fault": "dspex.testing.server",
    "LMServer": "dspex.testing.server",
    "RecordedRequest": "dspex.testing.server",
}


def __getattr__(name: str) -> Any:
    import importlib

    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dspex.testing' has no attribute {name!r}")
