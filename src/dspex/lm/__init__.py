"""Language-model clients: OpenAI-compatible and Anthropic over HTTP."""

from dspex.lm.base import BaseLM, Message
from dspex.lm.client import LM
from dspex.lm.resilience import CircuitBreaker, RetryPolicy
from dspex.lm.usage import UsageTracker, track_usage

__all__ = [
    "LM",
    "BaseLM",
    "CircuitBreaker",
    "Message",
    "RetryPolicy",
    "UsageTracker",
    "track_usage",
]
