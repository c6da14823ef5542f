"""DSPy's ``dspy.datasets``: the ``Dataset`` base class and ``DataLoader``, native.

DSPy's ready-made benchmark datasets (``HotPotQA``, ``GSM8K``, ``MATH``, ``Colors``,
``AlfWorld``) download from the Hugging Face Hub; DSPEx does not ship them: load them with
``DataLoader().from_huggingface(...)`` or from DSPy itself (``dspy.datasets.HotPotQA``).
"""

from __future__ import annotations

from dspex.datasets.dataloader import DataLoader
from dspex.datasets.dataset import Dataset

__all__ = ["DataLoader", "Dataset"]

_NOT_SHIPPED = ("HotPotQA", "GSM8K", "MATH", "Colors", "AlfWorld")


def __getattr__(name: str) -> object:
    if name in _NOT_SHIPPED:
        from dspex.errors import ImplementationUnavailable

        raise ImplementationUnavailable(
            f"dspex.datasets.{name} is not provided: DSPy's benchmark datasets download from the "
            f"Hugging Face Hub. Use DataLoader().from_huggingface(...) or dspy.datasets.{name}."
        )
    raise AttributeError(f"module 'dspex.datasets' has no attribute {name!r}")
