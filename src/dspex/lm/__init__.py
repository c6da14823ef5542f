"""Language-model clients: OpenAI-compatible and Anthropic over HTTP.

``LM`` (and its HTTP transport) is imported on first access, so light parts such as
``dspex.lm.usage`` can be used without loading the HTTP stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dspex._lazy import lazy_getattr
from dspex.lm.base import BaseLM, Message
from dspex.lm.usage import UsageTracker, track_usage

if TYPE_CHECKING:
    from dspex.lm.client import LM
    from dspex.lm.resilience import CircuitBreaker, RetryPolicy

__all__ = [
    "LM",
    "BaseLM",
    "CircuitBreaker",
    "Message",
    "RetryPolicy",
    "UsageTracker",
    "track_usage",
]

_LAZY = {
    "LM": "dspex.lm.client",
    "CircuitBreaker": "dspex.lm.resilience",
    "RetryPolicy": "dspex.lm.resilience",
}


__getattr__ = lazy_getattr("dspex.lm", _LAZY, globals())
