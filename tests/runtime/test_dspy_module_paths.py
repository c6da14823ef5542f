"""DSPy's module paths of the module library (``dspy.predict.react`` ...) are the native modules."""

from __future__ import annotations

import importlib

import pytest

import dspex.modules


@pytest.mark.parametrize(
    "name",
    [
        "aggregation",
        "best_of_n",
        "knn",
        "multi_chain_comparison",
        "parallel",
        "program_of_thought",
        "react",
        "refine",
    ],
)
def test_dspy_predict_paths_export_the_native_modules(name: str) -> None:
    alias = importlib.import_module(f"dspex.predict.{name}")
    native = importlib.import_module(f"dspex.modules.{name}")
    assert alias.__all__ == native.__all__
    for public in native.__all__:
        assert getattr(alias, public) is getattr(native, public)
    assert dspex.modules  # the engine package stays importable on its own
