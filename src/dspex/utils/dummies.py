"""DSPy's test doubles with DSPy's semantics: ``DummyLM``, ``dummy_rm``, ``DummyVectorizer``.

``DummyLM(answers)`` answers in process, rendering each answer in the format its adapter's
prompt asks for: a list of dicts is used in order (then ``{"answer": "No more responses"}``); a
dict of dicts answers with the entry whose key occurs in the last message; with
``follow_examples=True`` it repeats the output of the demo whose input matches the request.
Calls are recorded in ``history`` (and the global history) like a real LM's.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from dspex.lm.base import BaseLM, Message
from dspex.lm.usage import current_tracker
from dspex.utils.callback import with_callbacks
from dspex.utils.inspect_history import record_history

__all__ = ["DummyLM", "DummyVectorizer", "dummy_rm"]

_HEADER = re.compile(r"\[\[ ## (\w+) ## \]\]")
_NO_MORE = {"answer": "No more responses"}


class DummyLM(BaseLM):
    """An in-process LM with scripted answers (DSPy's ``dspy.utils.DummyLM``)."""

    def __init__(
        self,
        answers: Sequence[Mapping[str, Any]] | Mapping[str, Mapping[str, Any]],
        follow_examples: bool = False,
        reasoning: bool = False,
        adapter: Any = None,
    ) -> None:
        super().__init__("dummy", temperature=0.0, max_tokens=1000)
        self.answers: Iterator[Mapping[str, Any]] | Mapping[str, Mapping[str, Any]] = (
            answers if isinstance(answers, Mapping) else iter(list(answers))
        )
        self.follow_examples = follow_examples
        self.reasoning = reasoning
        self.adapter = adapter
        self.cache = False
        self.callbacks: list[Any] = []
        self.history: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ answering
    def _format_answer_fields(self, values: Mapping[str, Any]) -> str:
        """An answer as the adapter would have the LM write it."""
        from dspex.adapters.json import JSONAdapter
        from dspex.adapters.values import format_field_value, serialize_for_json
        from dspex.signatures import OutputField

        if isinstance(self.adapter, JSONAdapter):
            return json.dumps(serialize_for_json(dict(values)), indent=2, ensure_ascii=False)
        info = OutputField()
        return "\n\n".join(
            f"[[ ## {name} ## ]]\n{format_field_value(info, value)}"
            for name, value in values.items()
        )

    def _use_example(self, messages: list[Message]) -> str | None:
        """The output of the demo turn whose input matches the final request."""
        counts: defaultdict[str, int] = defaultdict(int)
        for message in messages:
            content = message.get("content")
            if isinstance(content, str) and (match := _HEADER.match(content)):
                counts[match.group(0)] += 1
        if not counts:
            return None
        most = max(counts.values())
        outputs = [field for field, count in counts.items() if count != most]
        final_input = str(messages[-1]["content"]).split("\n\n")[0]
        for asked, answered in zip(reversed(messages[:-1]), reversed(messages), strict=False):
            text = str(answered.get("content"))
            if any(f in text for f in outputs) and final_input in str(asked.get("content")):
                return text
        return None

    def _answer(self, messages: list[Message]) -> str:
        if self.follow_examples:
            return self._use_example(messages) or ""
        if isinstance(self.answers, Mapping):
            last = str(messages[-1].get("content", ""))
            for key, values in self.answers.items():
                if key in last:
                    return self._format_answer_fields(values)
            return "No more responses"
        return self._format_answer_fields(next(self.answers, _NO_MORE))

    # ------------------------------------------------------------------ calling
    @with_callbacks
    def __call__(
        self, prompt: str | None = None, messages: list[Message] | None = None, **kwargs: Any
    ) -> list[str]:
        return self._complete(prompt, messages, kwargs)

    @with_callbacks
    async def acall(
        self, prompt: str | None = None, messages: list[Message] | None = None, **kwargs: Any
    ) -> list[str]:
        return self._complete(prompt, messages, kwargs)

    def _complete(
        self, prompt: str | None, messages: list[Message] | None, kwargs: dict[str, Any]
    ) -> list[str]:
        if messages is None:
            messages = [{"role": "user", "content": prompt or ""}]
        n = int(kwargs.get("n") or 1)
        outputs = [self._answer(messages) for _ in range(n)]
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        tracker = current_tracker()
        if tracker is not None:
            tracker.add_usage(self.model, usage)
        record_history(self, {
            "prompt": prompt, "messages": messages, "kwargs": {**self.kwargs, **kwargs},
            "outputs": outputs, "usage": usage, "cost": 0.0, "timestamp": time.time(),
            "model": self.model, "model_type": self.model_type,
        })  # fmt: skip
        return outputs

    def get_convo(self, index: int) -> tuple[Any, Any]:
        """The messages and outputs of the ``index``-th recorded call."""
        return self.history[index]["messages"], self.history[index]["outputs"]

    def copy(self, **kwargs: Any) -> DummyLM:
        import copy

        new = copy.copy(self)
        new.history = []
        new.callbacks = list(self.callbacks)
        new.kwargs = {**self.kwargs, **kwargs}
        return new

    def dump_state(self) -> dict[str, Any]:
        return {"model": self.model, **self.kwargs}


class DummyVectorizer:
    """Bag of character n-grams hashed into ``max_length`` buckets, centred and normalized."""

    def __init__(self, max_length: int = 100, n_gram: int = 2) -> None:
        self.max_length = max_length
        self.n_gram = n_gram
        self.P = 10**9 + 7
        rng = random.Random(123)
        self.coeffs = [rng.randrange(1, self.P) for _ in range(n_gram)]

    def _hash(self, gram: str) -> int:
        h = 1
        for coeff, char in zip(self.coeffs, gram, strict=False):
            h = (h * coeff + ord(char)) % self.P
        return h % self.max_length

    def __call__(self, texts: Sequence[str]) -> list[list[float]]:
        """One unit vector (mean removed) per text."""
        out: list[list[float]] = []
        for text in texts:
            vec = [0.0] * self.max_length
            for i in range(len(text) - self.n_gram + 1):
                vec[self._hash(text[i : i + self.n_gram])] += 1.0
            mean = sum(vec) / len(vec)
            vec = [v - mean for v in vec]
            norm = sum(v * v for v in vec) ** 0.5 + 1e-10
            out.append([v / norm for v in vec])
        return out


def dummy_rm(passages: Sequence[str] = ()) -> Callable[..., list[Any]]:
    """A retriever over ``passages`` by n-gram similarity: ``rm(query, k=3)`` -> top ``k``
    passages as objects with ``long_text`` (DSPy's ``dummy_rm``)."""
    from dspex.primitives.example import Example

    if not passages:

        def empty(query: str, *, k: int, **kwargs: Any) -> list[Any]:
            raise ValueError("No passages defined")

        return empty
    vectorizer = DummyVectorizer(max(map(len, passages)) + 100)
    passage_vecs = vectorizer(passages)

    def search(query: str, *, k: int, **kwargs: Any) -> list[Any]:
        if k > len(passages):
            raise ValueError(f"k={k} is more than the {len(passages)} passages")
        query_vec = vectorizer([query])[0]
        scores = [sum(a * b for a, b in zip(vec, query_vec, strict=True)) for vec in passage_vecs]
        best = sorted(range(len(passages)), key=lambda i: -scores[i])[:k]
        return [Example(long_text=passages[i]) for i in best]

    return search
