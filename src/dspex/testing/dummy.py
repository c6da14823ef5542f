"""``DummyLM``: an in-process LM for tests and overhead benchmarks (no HTTP)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dspex.lm.base import BaseLM, Message
from dspex.testing.answers import answer_messages, read_prompt, render_reply

__all__ = ["DummyLM"]

Reply = str | Mapping[str, Any]


class DummyLM(BaseLM):
    """Answers like :class:`~dspex.testing.LMServer`, in process.

    ``replies``: ``None`` for automatic type-correct answers; a list of replies used in order
    (then automatic); or a callable ``(messages) -> reply``. A reply that is a dict of field
    values is rendered in the format the prompt asks for. Every call is kept in ``calls``.
    """

    def __init__(
        self,
        replies: Sequence[Reply] | Callable[[list[Message]], Reply] | None = None,
        model: str = "dummy",
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        self._queue: list[Reply] = list(replies) if isinstance(replies, Sequence) else []
        self._fn = replies if callable(replies) else None
        self.calls: list[dict[str, Any]] = []

    async def acall(
        self, prompt: str | None = None, messages: list[Message] | None = None, **kwargs: Any
    ) -> list[str]:
        return self.__call__(prompt, messages, **kwargs)

    def __call__(
        self, prompt: str | None = None, messages: list[Message] | None = None, **kwargs: Any
    ) -> list[str]:
        """In process and synchronous: no event loop needed."""
        if messages is None:
            messages = [{"role": "user", "content": prompt or ""}]
        self.calls.append({"messages": messages, "kwargs": kwargs})
        n = int(kwargs.get("n") or self.kwargs.get("n") or 1)
        return [self._one(messages, i) for i in range(n)]

    def _one(self, messages: list[Message], choice: int) -> str:
        reply: Reply | None = None
        if self._fn is not None:
            reply = self._fn(messages)
        elif self._queue:
            reply = self._queue.pop(0)
        if reply is None:
            return answer_messages(messages, choice=choice)
        if isinstance(reply, str):
            return reply
        system: Any = ""
        for m in messages:
            if m.get("role") == "system":
                system = m["content"]
                break
        last_user: Any = ""
        for m in reversed(messages):
            if m.get("role") == "user":
                last_user = m["content"]
                break
        spec = read_prompt(str(system), str(last_user))
        if spec is None:
            return str(dict(reply))
        return render_reply(spec, reply)

    def dump_state(self) -> dict[str, Any]:
        return {"model": self.model, **self.kwargs}
