"""``KNN``: the k training examples nearest to the inputs, by dot product of embeddings.

Any embedder callable works: ``vectorizer(list_of_texts)`` returns one vector per text (a
numpy array, a list of lists, a :class:`dspex.Embedder`...). Texts are built as DSPy builds
them (``key: value`` pairs of the input fields joined by `` | ``).

With numpy installed the scores are computed as DSPy computes them (training vectors cast to
float32, the query vector in the embedder's own dtype, ``np.dot`` then ``argsort``), so ties
break the same way numpy breaks them for DSPy (numpy's default sort is not stable, and its
order among equal scores depends on the platform's sort kernel: only numpy itself
reproduces it). Without numpy a pure-Python fallback ranks with the same float32 rounding
and a stable sort (ties: the later example first).
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Sequence
from typing import Any

from dspex.primitives.example import Example

__all__ = ["KNN"]


def _numpy() -> Any:
    try:
        import numpy
    except ImportError:
        return None
    return numpy


def _rows(vectors: Any) -> list[list[float]]:
    rows = vectors.tolist() if hasattr(vectors, "tolist") else vectors
    return [[float(x) for x in row] for row in rows]


def _text(pairs: Any) -> str:
    return " | ".join(f"{key}: {value}" for key, value in pairs)


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
            _text((key, value) for key, value in ex.items() if key in (ex._input_keys or ()))
            for ex in self.trainset
        ]
        vectors = self.embedding(texts)
        np = _numpy()
        self.trainset_vectors: Any
        if np is not None:
            self.trainset_vectors = np.asarray(vectors).astype(np.float32)
        else:  # float32, as DSPy casts the training vectors
            self.trainset_vectors = [list(array("f", row)) for row in _rows(vectors)]
        if len(self.trainset_vectors) != len(self.trainset):
            raise ValueError(
                f"the vectorizer returned {len(self.trainset_vectors)} vectors for "
                f"{len(self.trainset)} training examples"
            )

    def __call__(self, **kwargs: Any) -> list[Example]:
        query = self.embedding([_text(kwargs.items())])
        np = _numpy()
        if np is not None:
            scores = np.dot(self.trainset_vectors, np.asarray(query).T).squeeze()
            order = [int(i) for i in np.atleast_1d(scores).argsort()[-self.k :][::-1]]
        else:
            vector = _rows(query)[0]
            values = [
                sum(a * b for a, b in zip(row, vector, strict=True))
                for row in self.trainset_vectors
            ]
            order = sorted(range(len(values)), key=values.__getitem__)[-self.k :][::-1]
        return [self.trainset[i] for i in order]
