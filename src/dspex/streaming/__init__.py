"""Streaming a program's output: ``streamify``, ``StreamListener``, ``StreamResponse``,
``StatusMessage``, ``StatusMessageProvider``, ``streaming_response`` (DSPy's names)."""

from dspex.streaming.listener import StreamListener
from dspex.streaming.messages import StatusMessage, StatusMessageProvider, StreamResponse
from dspex.streaming.streamify import apply_sync_streaming, streamify, streaming_response

__all__ = [
    "StatusMessage",
    "StatusMessageProvider",
    "StreamListener",
    "StreamResponse",
    "apply_sync_streaming",
    "streamify",
    "streaming_response",
]
