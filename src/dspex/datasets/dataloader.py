"""``DataLoader``: lists of :class:`~dspex.Example` from Hugging Face datasets, files and frames.

Files (CSV, JSON, Parquet) are read through the Hugging Face ``datasets`` library, as DSPy
reads them, so column types come out the same (``pip install datasets``); ``from_pandas``
needs only pandas. ``sample`` and ``train_test_split`` use the ``random`` module's global
generator exactly as DSPy's do, so the same seed gives the same split.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from dspex.datasets.dataset import Dataset
from dspex.errors import CallError, ConfigurationError
from dspex.primitives.example import Example

__all__ = ["DataLoader"]


def _load_dataset(*args: Any, **kwargs: Any) -> Any:
    try:
        from datasets import load_dataset
    except ImportError:
        raise ConfigurationError(
            "DataLoader reads Hugging Face datasets and files with the `datasets` package: "
            "pip install datasets"
        ) from None
    return load_dataset(*args, **kwargs)


def _examples(
    rows: Iterable[Mapping[str, Any]], fields: Sequence[str] | None, input_keys: Sequence[str]
) -> list[Example]:
    out = []
    for row in rows:
        names = list(fields) if fields else list(row.keys())
        out.append(Example({name: row[name] for name in names}).with_inputs(*input_keys))
    return out


class DataLoader(Dataset):
    """Loaders returning examples; a ``Dataset`` subclass only for DSPy's type hierarchy."""

    def __init__(self) -> None:  # no splits of its own
        pass

    def from_huggingface(
        self,
        dataset_name: str,
        *args: Any,
        input_keys: tuple[str, ...] = (),
        fields: tuple[str, ...] | None = None,
        **kwargs: Any,
    ) -> dict[str, list[Example]] | list[Example]:
        """Every split of a Hub dataset (a dict by split name), or one list when ``split=`` names one."""
        if fields and not isinstance(fields, tuple):
            raise CallError("Invalid fields provided. Please provide a tuple of fields.")
        if not isinstance(input_keys, tuple):
            raise CallError("Invalid input keys provided. Please provide a tuple of input keys.")
        dataset = _load_dataset(dataset_name, *args, **kwargs)
        if isinstance(dataset, list) and isinstance(kwargs.get("split"), list):
            dataset = dict(zip(kwargs["split"], dataset, strict=False))
        if hasattr(dataset, "keys"):
            return {name: _examples(dataset[name], fields, input_keys) for name in dataset}
        return _examples(dataset, fields, input_keys)

    def _from_file(
        self, kind: str, path: str, fields: Sequence[str] | None, input_keys: Sequence[str]
    ) -> list[Example]:
        dataset = _load_dataset(kind, data_files=path)["train"]
        return _examples(dataset, fields or list(dataset.features), input_keys)

    def from_csv(
        self, file_path: str, fields: list[str] | None = None, input_keys: tuple[str, ...] = ()
    ) -> list[Example]:
        return self._from_file("csv", file_path, fields, input_keys)

    def from_json(
        self, file_path: str, fields: list[str] | None = None, input_keys: tuple[str, ...] = ()
    ) -> list[Example]:
        return self._from_file("json", file_path, fields, input_keys)

    def from_parquet(
        self, file_path: str, fields: list[str] | None = None, input_keys: tuple[str, ...] = ()
    ) -> list[Example]:
        return self._from_file("parquet", file_path, fields, input_keys)

    def from_pandas(
        self, df: Any, fields: list[str] | None = None, input_keys: tuple[str, ...] = ()
    ) -> list[Example]:
        names = list(df.columns) if fields is None else fields
        return _examples((row for _, row in df.iterrows()), names, input_keys)

    def from_rm(self, num_samples: int, fields: list[str], input_keys: list[str]) -> list[Example]:
        """Records from the configured retriever's ``get_objects`` (``dspex.configure(rm=...)``)."""
        from dspex import settings

        rm = getattr(settings, "rm", None)
        if rm is None:
            raise ConfigurationError(
                "Retrieval module not found. Please set a retrieval module using `dspex.configure(rm=...)`."
            )
        get_objects = getattr(rm, "get_objects", None)
        if get_objects is None:
            raise ConfigurationError(
                "Retrieval module does not support `get_objects`. Please use a different retrieval module."
            )
        return _examples(get_objects(num_samples=num_samples, fields=fields), fields, input_keys)

    def sample(self, dataset: list[Example], n: int, *args: Any, **kwargs: Any) -> list[Example]:
        if not isinstance(dataset, list):
            raise CallError(
                f"Invalid dataset provided of type {type(dataset)}. Please provide a list of `Example`s."
            )
        return random.sample(dataset, n, *args, **kwargs)

    def train_test_split(
        self,
        dataset: list[Example],
        train_size: int | float = 0.75,
        test_size: int | float | None = None,
        random_state: int | None = None,
    ) -> dict[str, list[Example]]:
        """Shuffle (seeding the global ``random`` with ``random_state``, as DSPy) and split."""
        if random_state is not None:
            random.seed(random_state)
        shuffled = dataset.copy()
        random.shuffle(shuffled)
        train_end = _count(train_size, len(shuffled), "train_size")
        if test_size is None:
            test_end = len(shuffled) - train_end
        else:
            test_end = _count(test_size, len(shuffled), "test_size")
            if train_end + test_end > len(shuffled):
                raise CallError(
                    "`train_size` + `test_size` cannot exceed the total number of samples. Received "
                    f"`train_size`: {train_end}, `test_size`: {test_end}, and `dataset_size`: {len(shuffled)}."
                )
        return {"train": shuffled[:train_end], "test": shuffled[train_end : train_end + test_end]}


def _count(size: Any, total: int, name: str) -> int:
    if isinstance(size, float) and 0 < size < 1:
        return int(total * size)
    if isinstance(size, int) and not isinstance(size, bool):
        return size
    raise CallError(
        f"Invalid `{name}`. Please provide a float between 0 and 1 to represent the proportion of the "
        f"dataset or an int to represent the absolute number of samples. Received `{name}`: {size}."
    )
