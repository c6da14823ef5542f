"""``Retrieve``: passages for a query from the configured retriever (``dspex.configure(rm=...)``).

As DSPy's ``dspy.Retrieve``: a learnable parameter holding ``k``; calling it asks
``settings.rm(query, k=k, **kwargs)`` and returns ``Prediction(passages=[...])`` with each
passage's ``long_text`` (plain strings are taken as they are). Callbacks see the call as a
module call. ``acall`` runs the retriever in a worker thread (retrievers are sync).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterable
from typing import Any

from dspex.errors import ConfigurationError
from dspex.primitives.module import Parameter
from dspex.primitives.prediction import Prediction
from dspex.utils.callback import with_callbacks

__all__ = ["Retrieve"]


class Retrieve(Parameter):
    """Retrieve the top ``k`` passages for a query."""

    name = "Search"
    input_variable = "query"
    desc = (
        "takes a search query and returns one or more potentially relevant passages from a corpus"
    )

    def __init__(self, k: int = 3, callbacks: list[Any] | None = None) -> None:
        self.stage = secrets.token_hex(8)
        self.k = k
        self.callbacks = list(callbacks or [])

    def __repr__(self) -> str:
        return f"Retrieve(k={self.k})"

    def reset(self) -> None:
        """Nothing learned to forget (``k`` is configuration)."""

    def dump_state(self, json_mode: bool = True) -> dict[str, Any]:
        return {"k": self.k}

    def load_state(self, state: dict[str, Any]) -> Retrieve:
        for name, value in state.items():
            setattr(self, name, value)
        return self

    @with_callbacks
    def __call__(self, *args: Any, **kwargs: Any) -> Prediction:
        return self.forward(*args, **kwargs)

    @with_callbacks
    async def acall(self, *args: Any, **kwargs: Any) -> Prediction:
        return await asyncio.to_thread(self.forward, *args, **kwargs)

    def forward(self, query: str, k: int | None = None, **kwargs: Any) -> Prediction:
        from dspex import settings

        rm = settings.current().rm
        if not rm:
            raise ConfigurationError(
                "No RM is loaded: configure a retriever, e.g. "
                "dspex.configure(rm=dspex.ColBERTv2(url=...))",
                field="rm",
            )
        found = rm(query, k=self.k if k is None else k, **kwargs)
        passages = (
            found if isinstance(found, Iterable) and not isinstance(found, str | bytes) else [found]
        )
        return Prediction(passages=[_text(passage) for passage in passages])


def _text(passage: Any) -> Any:
    if isinstance(passage, str):
        return passage
    if isinstance(passage, dict) and "long_text" in passage:
        return passage["long_text"]
    return passage.long_text
