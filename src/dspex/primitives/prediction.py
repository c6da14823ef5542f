"""``Prediction`` (a module's output) and ``Completions`` (all choices of one call)."""

from __future__ import annotations

from collections.abc import ItemsView, Mapping, Sequence
from typing import Any

from dspex.primitives.example import Example

__all__ = ["Completions", "Prediction"]

_new_object = object.__new__


class Prediction(Example):
    """The output of a module: fields of the first completion, plus ``completions``.

    As in DSPy, a prediction with a ``score`` field supports float conversion, arithmetic
    and ordering on that score.
    """

    _completions: Completions | None
    _lm_usage: dict[str, Any] | None

    def __init__(self, base: Example | Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(base, **kwargs)
        object.__setattr__(self, "_completions", None)
        object.__setattr__(self, "_lm_usage", None)

    @classmethod
    def of_store(cls, store: dict[str, Any], usage: dict[str, Any] | None = None) -> Prediction:
        """``cls(**store)`` with ``set_lm_usage(usage)``, built in one step (``store`` is
        taken as it is, not copied: pass a fresh dict). For a prediction that arrives whole,
        such as a DSPy worker's reply."""
        if cls is not Prediction:  # a subclass may have its own __init__
            obj = cls(**store)
            obj.set_lm_usage(usage)
            return obj
        obj = _new_object(cls)
        obj.__dict__.update(_input_keys=None, _store=store, _completions=None, _lm_usage=usage)
        return obj

    @classmethod
    def from_completions(
        cls,
        list_or_dict: Sequence[Mapping[str, Any]] | Mapping[str, list[Any]],
        signature: Any = None,
    ) -> Prediction:
        if (
            cls is Prediction
            and type(list_or_dict) is list
            and len(list_or_dict) == 1
            and type(list_or_dict[0]) is dict
        ):  # one choice (the common call): what the general path below builds, directly
            choice = list_or_dict[0]
            completions = _new_object(Completions)
            completions.signature = signature  # Completions has no __setattr__ of its own
            by_field = completions._completions = {}  # a loop: a comprehension is a frame
            for k, v in choice.items():
                by_field[k] = [v]
            obj = _new_object(cls)
            state = obj.__dict__  # item stores: Example's __setattr__ is a Python frame
            state["_input_keys"] = None
            state["_store"] = dict(choice)
            state["_completions"] = completions
            state["_lm_usage"] = None
            return obj
        completions = Completions(list_or_dict, signature=signature)
        store = {k: v[0] for k, v in completions._completions.items()}
        obj = cls()
        object.__setattr__(obj, "_completions", completions)
        object.__setattr__(obj, "_store", store)
        return obj

    @property
    def completions(self) -> Completions | None:
        return self._completions

    def get_lm_usage(self) -> dict[str, Any] | None:
        """Token usage of the call that produced this prediction, per model."""
        return self._lm_usage

    def set_lm_usage(self, value: dict[str, Any] | None) -> None:
        object.__setattr__(self, "_lm_usage", value)

    def __repr__(self) -> str:
        store_repr = ",\n    ".join(f"{k}={v!r}" for k, v in self._store.items())
        if self._completions is None or len(self._completions) == 1:
            return f"Prediction(\n    {store_repr}\n)"
        omitted = len(self._completions) - 1
        return (
            f"Prediction(\n    {store_repr},\n    completions=Completions(...)\n)"
            f" ({omitted} completions omitted)"
        )

    __str__ = __repr__

    # ------------------------------------------------------------------ score arithmetic
    def __float__(self) -> float:
        if "score" not in self._store:
            raise ValueError("Prediction object does not have a 'score' field to convert to float.")
        return float(self._store["score"])

    @staticmethod
    def _num(other: object, op: str) -> float:
        if isinstance(other, Prediction):
            return float(other)
        if isinstance(other, int | float):
            return float(other)
        raise TypeError(f"Unsupported type for {op}: {type(other)}")

    def __add__(self, other: object) -> float:
        return float(self) + self._num(other, "addition")

    def __radd__(self, other: object) -> float:
        return self._num(other, "addition") + float(self)

    def __truediv__(self, other: object) -> float:
        return float(self) / self._num(other, "division")

    def __rtruediv__(self, other: object) -> float:
        return self._num(other, "division") / float(self)

    def __lt__(self, other: object) -> bool:
        return float(self) < self._num(other, "comparison")

    def __le__(self, other: object) -> bool:
        return float(self) <= self._num(other, "comparison")

    def __gt__(self, other: object) -> bool:
        return float(self) > self._num(other, "comparison")

    def __ge__(self, other: object) -> bool:
        return float(self) >= self._num(other, "comparison")

    __hash__ = Example.__hash__


class Completions:
    """All choices of one call, by field: ``completions.answer`` is a list, one per choice."""

    def __init__(
        self,
        list_or_dict: Sequence[Mapping[str, Any]] | Mapping[str, list[Any]],
        signature: Any = None,
    ) -> None:
        self.signature = signature
        by_field: dict[str, list[Any]]
        if type(list_or_dict) is list and len(list_or_dict) == 1 and type(list_or_dict[0]) is dict:
            by_field = {k: [v] for k, v in list_or_dict[0].items()}  # one choice: lengths agree
        elif isinstance(list_or_dict, Mapping):
            by_field = {k: list(v) for k, v in list_or_dict.items()}
        else:
            by_field = {}
            for choice in list_or_dict:
                for k, v in choice.items():
                    by_field.setdefault(k, []).append(v)
        if len(by_field) > 1 and len({len(v) for v in by_field.values()}) > 1:
            raise ValueError("All completion fields must have the same number of values")
        self._completions = by_field

    def items(self) -> ItemsView[str, list[Any]]:
        return self._completions.items()

    def __getitem__(self, key: int | str) -> Any:
        if isinstance(key, int):
            if key < 0 or key >= len(self):
                raise IndexError("Index out of range")
            return Prediction(**{k: v[key] for k, v in self._completions.items()})
        return self._completions[key]

    def __getattr__(self, name: str) -> list[Any]:
        completions = self.__dict__.get("_completions")
        if completions is not None and name in completions:
            return completions[name]  # type: ignore[no-any-return]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __len__(self) -> int:
        return len(next(iter(self._completions.values()))) if self._completions else 0

    def __contains__(self, key: object) -> bool:
        return key in self._completions

    def __repr__(self) -> str:
        items_repr = ",\n    ".join(f"{k}={v!r}" for k, v in self._completions.items())
        return f"Completions(\n    {items_repr}\n)"

    __str__ = __repr__
