"""DSPy's ``dspy.predict`` layout: the module library by DSPy's names.

Each name is the native module when DSPEx has one (``dspex.modules``), otherwise built by the
router (DSPy in a worker until a native implementation is registered).
"""

from __future__ import annotations

import sys
from typing import Any

from dspex.modules import chain_of_thought, predict

# DSPy's module paths are these very modules (so patching dspy.predict.predict.X patches Predict's)
sys.modules[f"{__name__}.predict"] = predict
sys.modules[f"{__name__}.chain_of_thought"] = chain_of_thought

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
    "ReActV2",
    "Refine",
    "majority",
]


def __getattr__(name: str) -> Any:
    if name in ("predict", "chain_of_thought"):
        return sys.modules[f"{__name__}.{name}"]
    if name not in __all__:
        raise AttributeError(f"module 'dspex.predict' has no attribute {name!r}")
    import dspex

    value = getattr(dspex, name)
    globals()[name] = value
    return value
