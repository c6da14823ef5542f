"""``dotdict``: a dict whose keys read and write as attributes (DSPy's passages are these)."""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["dotdict"]


class dotdict(dict[str, Any]):
    """``d.key`` is ``d["key"]``; a missing key raises ``AttributeError`` (so ``hasattr`` works).

    Dunder names keep their normal meaning, so copying and pickling behave as for a dict.
    """

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__") and key.endswith("__"):
            raise AttributeError(key)
        try:
            return self[key]
        except KeyError:
            raise AttributeError(
                f"{type(self).__name__!s} object has no attribute {key!r}"
            ) from None

    def __setattr__(self, key: str, value: Any) -> None:
        if key.startswith("__") and key.endswith("__"):
            super().__setattr__(key, value)
        else:
            self[key] = value

    def __delattr__(self, key: str) -> None:
        if key.startswith("__") and key.endswith("__"):
            super().__delattr__(key)
        else:
            try:
                del self[key]
            except KeyError:
                raise AttributeError(key) from None

    def __deepcopy__(self, memo: dict[int, Any]) -> dotdict:
        return dotdict(copy.deepcopy(dict(self), memo))
