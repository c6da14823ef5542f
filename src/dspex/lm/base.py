"""The interface every language model implements (native clients, test doubles, user LMs)."""

from __future__ import annotations

from abc import ABC
from typing import Any

from dspex._sync import run_sync

__all__ = ["BaseLM", "Message"]

Message = dict[str, Any]


class BaseLM(ABC):
    """A chat language model.

    ``acall`` is the one primitive: given messages (or a bare prompt) and request options it
    returns one completion text per choice (``n`` choices). ``kwargs`` holds the default
    request options (temperature, max_tokens, ...) merged under per-call options.
    """

    model: str
    kwargs: dict[str, Any]
    model_type: str = "chat"

    def __init__(self, model: str, **kwargs: Any) -> None:
        self.model = model
        self.kwargs = kwargs

    async def acall(
        self,
        prompt: str | None = None,
        messages: list[Message] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Send one request; return the completion text of each choice.

        Subclasses implement this (the primitive). A subclass that only overrides
        ``__call__`` (as DSPy ``BaseLM`` subclasses in tests often do) gets it run in a
        worker thread here.
        """
        if type(self).__call__ is BaseLM.__call__:
            raise NotImplementedError(f"{type(self).__name__} must implement acall()")
        import asyncio

        result: list[str] = await asyncio.to_thread(self.__call__, prompt, messages, **kwargs)
        return result

    def __call__(
        self,
        prompt: str | None = None,
        messages: list[Message] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        return run_sync(self.acall(prompt, messages, **kwargs))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model!r})"
