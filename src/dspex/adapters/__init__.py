"""Adapters: signature + demos + inputs -> chat messages, and LM replies -> field values."""

from dspex.adapters.base import Adapter
from dspex.adapters.chat import ChatAdapter
from dspex.adapters.json import JSONAdapter
from dspex.adapters.types import History

__all__ = ["Adapter", "ChatAdapter", "History", "JSONAdapter"]
