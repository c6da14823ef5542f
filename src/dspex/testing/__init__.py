"""Test doubles that speak the real protocols: ``LMServer`` (HTTP) and ``DummyLM`` (in process).

Use them in your own tests::

    from dspex.testing import LMServer
    with LMServer() as server:
        lm = dspex.LM("openai/test", api_base=server.url, api_key="test")
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dspex._lazy import lazy_getattr

if TYPE_CHECKING:
    from dspex.testing.dummy import DummyLM
    from dspex.testing.server import Fault, LMServer, RecordedRequest, ToolCallReply

__all__ = ["DummyLM", "Fault", "LMServer", "RecordedRequest", "ToolCallReply"]

_WHERE = {
    "DummyLM": "dspex.testing.dummy",
    "Fault": "dspex.testing.server",
    "LMServer": "dspex.testing.server",
    "RecordedRequest": "dspex.testing.server",
    "ToolCallReply": "dspex.testing.server",
}


__getattr__ = lazy_getattr("dspex.testing", _WHERE, globals())
