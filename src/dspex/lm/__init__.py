"""Language-model clients: OpenAI-compatible and Anthropic over HTTP."""

from dspex.lm.base import BaseLM, Message

__all__ = ["BaseLM", "Message"]
