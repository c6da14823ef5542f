"""DSPy's ``dspy.predict`` layout: the module library by DSPy's names.

Each name is the native module when DSPEx has one (``dspex.modules``), otherwise built by the
router (DSPy in a worker until a native implementation is registered).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "KNN",
    "BestOfN",
    "ChainOfThought",
    "CodeAct",
    "MultiChainComparison",
    "Parallel",
    "Predict",
    "ProgramOfThought",
    "ReAct",
    "Refine",
    "majority",
]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'dspex.predict' has no attribute {name!r}")
    import dspex

    value = getattr(dspex, name)
    globals()[name] = value
    return value
