"""Value types adapters know about: ``History`` (a conversation passed as an input field)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["History"]


class History:
    """Earlier turns of a conversation: each message is a dict of signature field values.

    Mirrors ``dspy.History``: immutable, ``messages`` is a list of dicts.
    """

    __slots__ = ("_messages",)
    _messages: list[dict[str, Any]]

    def __init__(self, messages: Iterable[Mapping[str, Any]]) -> None:
        msgs = list(messages)
        if not all(isinstance(m, Mapping) for m in msgs):
            from dspex.errors import UserError

            raise UserError("History messages must be dicts of field values")
        object.__setattr__(self, "_messages", [dict(m) for m in msgs])

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self._messages

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("History is immutable")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, History) and self._messages == other._messages

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"History(messages={self._messages!r})"

    def model_dump(self, mode: str = "python") -> dict[str, Any]:
        """``{"messages": [...]}``; with ``mode="json"`` the values are JSON-ready (as pydantic's)."""
        if mode == "json":
            from dspex.adapters.values import serialize_for_json

            return {"messages": serialize_for_json(self._messages)}
        return {"messages": self._messages}

    @classmethod
    def model_validate(cls, data: Any) -> History:
        """A History from ``{"messages": [...]}`` (or a History)."""
        if isinstance(data, History):
            return data
        if isinstance(data, Mapping) and "messages" in data:
            return cls(data["messages"])
        from dspex.errors import UserError

        raise UserError(f"History.model_validate expects {{'messages': [...]}}, got {data!r}")
