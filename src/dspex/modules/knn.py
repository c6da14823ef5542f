"""``KNN``: the k training examples nearest to the inputs, by dot product of embeddings.

Any embedder callable works: ``vectorizer(list_of_texts)`` returns one vector per text (a
numpy array, a list of lists...). Texts are built as DSPy builds them (``key: value`` pairs of
the input fields joined by `` | ``), training vectors are rounded to float32 as DSPy casts
them, and the order is numpy's ``argsort()[-k:][::-1]`` (ties: the later example first), so
the neighbours are DSPy's for the same embedder. No numpy needed.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Sequence
from typing import Any

from dspex.primitives.example import Example

__all__ = ["KNN"]


def _rows(vectors: Any) -> list[list[float]]:
    rows = vectors.tolist() if hasattr(vectors, "tolist") else vectors
    return [[float(x) for x in row] for row in rows]


class KNN:
    """``KNN(k, trainset, vectorizer)(**inputs)`` -> the ``k`` nearest training examples."""

    def __init__(
        self, k: int, trainset: Sequence[Example], vectorizer: Callable[[list[str]], Any]
    ) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k!r}")
        self.k = k
        self.trainset = list(trainset)
        self.embedding = vectorizer
        texts = [
            " | ".join(
                f"{key}: {value}" for key, value in ex.items() if key in (ex._input_keys or ())
            )
            for ex in self.trainset
        ]
        # float32, as DSPy casts the training vectors
        self.trainset_vectors = [list(array("f", row)) for row in _rows(self.embedding(texts))]
        if len(self.trainset_vectors) != len(self.trainset):
            raise ValueError(
                f"the vectorizer returned {len(self.trainset_vectors)} vectors for "
                f"{len(self.trainset)} training examples"
            )

    def __call__(self, **kwargs: Any) -> list[Example]:
        query = _rows(self.embedding([" | ".join(f"{key}: {val}" for key, val in kwargs.items())]))[
            0
        ]
        scores = [
            sum(a * b for a, b in zip(row, query, strict=True)) for row in self.trainset_vectors
        ]
        ascending = sorted(range(len(scores)), key=scores.__getitem__)
        return [self.trainset[i] for i in ascending[-self.k :][::-1]]
