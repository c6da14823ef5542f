"""``Dataset``: train/dev/test splits, shuffled and sampled by seed, as DSPy's base class.

A subclass fills ``self._train``, ``self._dev`` and ``self._test`` with records (mappings);
the ``train``/``dev``/``test`` properties shuffle each split with ``random.Random(seed)``
(whatever the requested size, so a smaller sample is a prefix of a larger one), cut it to
its size and wrap every record in an :class:`~dspex.Example` tagged with a fresh
``dspy_uuid`` and its ``dspy_split`` — the same examples, in the same order, DSPy yields.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from dspex.errors import UserError
from dspex.primitives.example import Example

__all__ = ["Dataset"]


class Dataset:
    """Splits of a dataset with seeded shuffling and per-split sizes (``None``: all)."""

    _train: Iterable[Mapping[str, Any]]
    _dev: Iterable[Mapping[str, Any]]
    _test: Iterable[Mapping[str, Any]]

    def __init__(
        self,
        train_seed: int = 0,
        train_size: int | None = None,
        eval_seed: int = 0,
        dev_size: int | None = None,
        test_size: int | None = None,
        input_keys: list[str] | None = None,
    ) -> None:
        self.train_seed, self.train_size = train_seed, train_size
        self.dev_seed, self.dev_size = eval_seed, dev_size
        self.test_seed, self.test_size = eval_seed, test_size
        self.input_keys = list(input_keys or [])
        self.do_shuffle = True
        self.name = type(self).__name__

    def reset_seeds(
        self,
        train_seed: int | None = None,
        train_size: int | None = None,
        eval_seed: int | None = None,
        dev_size: int | None = None,
        test_size: int | None = None,
    ) -> None:
        """Change the given seeds/sizes (``None`` keeps a value) and forget the sampled splits."""
        if train_seed is not None:
            self.train_seed = train_seed
        if train_size is not None:
            self.train_size = train_size
        if eval_seed is not None:
            self.dev_seed = self.test_seed = eval_seed
        if dev_size is not None:
            self.dev_size = dev_size
        if test_size is not None:
            self.test_size = test_size
        for cached in ("_train_", "_dev_", "_test_"):
            self.__dict__.pop(cached, None)

    @property
    def train(self) -> list[Example]:
        return self._split("train", self.train_size, self.train_seed)

    @property
    def dev(self) -> list[Example]:
        return self._split("dev", self.dev_size, self.dev_seed)

    @property
    def test(self) -> list[Example]:
        return self._split("test", self.test_size, self.test_seed)

    def _split(self, split: str, size: int | None, seed: int) -> list[Example]:
        cached: list[Example] | None = self.__dict__.get(f"_{split}_")
        if cached is None:
            records = getattr(self, f"_{split}", None)
            if records is None:
                raise UserError(
                    f"{self.name} has no {split} split: a Dataset subclass sets self._{split} "
                    "to a list of records (mappings) in its __init__"
                )
            cached = self._shuffle_and_sample(split, records, size, seed)
            self.__dict__[f"_{split}_"] = cached
        return cached

    def _shuffle_and_sample(
        self, split: str, data: Iterable[Mapping[str, Any]], size: int | None, seed: int = 0
    ) -> list[Example]:
        records = list(data)
        if self.do_shuffle:
            random.Random(seed).shuffle(records)
        out = []
        for record in records[:size]:
            example = Example(**record, dspy_uuid=str(uuid.uuid4()), dspy_split=split)
            out.append(example.with_inputs(*self.input_keys) if self.input_keys else example)
        return out

    @classmethod
    def prepare_by_seed(
        cls,
        train_seeds: list[int] | None = None,
        train_size: int = 16,
        dev_size: int = 1000,
        divide_eval_per_seed: bool = True,
        eval_seed: int = 2023,
        **kwargs: Any,
    ) -> _Splits:
        """One train sample per seed and the dev set cut into matching (or shared) eval sets."""
        seeds = train_seeds or [1, 2, 3, 4, 5]
        dataset = cls(
            train_size=train_size, eval_seed=eval_seed, dev_size=dev_size, test_size=0, **kwargs
        )
        eval_set = dataset.dev
        per_seed = dev_size // len(seeds) if divide_eval_per_seed else dev_size
        train_sets, eval_sets = [], []
        for i, seed in enumerate(seeds):
            dataset.reset_seeds(train_seed=seed, train_size=train_size)
            offset = i * per_seed if divide_eval_per_seed else 0
            eval_sets.append(eval_set[offset : offset + per_seed])
            train_sets.append(dataset.train)
            if len(eval_sets[-1]) != per_seed or len(train_sets[-1]) != train_size:
                raise UserError(
                    f"{dataset.name} is too small for prepare_by_seed: seed {seed} got "
                    f"{len(train_sets[-1])} train / {len(eval_sets[-1])} eval examples, "
                    f"wanted {train_size} / {per_seed}"
                )
        return _Splits(train_sets=train_sets, eval_sets=eval_sets)


class _Splits(dict[str, list[list[Example]]]):
    """``prepare_by_seed``'s result: a dict with attribute access (DSPy returns a dotdict)."""

    def __getattr__(self, name: str) -> list[list[Example]]:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None
