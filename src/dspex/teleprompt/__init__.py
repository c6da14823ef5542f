"""Native optimizers with DSPy 3.4.1's classes, arguments and results (``dspy.teleprompt``).

``GEPA`` (``dspex.teleprompt.gepa``) is imported on first use (it needs the ``gepa`` library).
The DSPy-only optimizers (``AvatarOptimizer``, ``InferRules``...) resolve here to routed
names, built on DSPy in a worker pool.
"""

from __future__ import annotations

from typing import Any

from dspex.teleprompt.bettertogether import BetterTogether
from dspex.teleprompt.bootstrap import BootstrapFewShot
from dspex.teleprompt.bootstrap_finetune import BootstrapFinetune
from dspex.teleprompt.copro_optimizer import COPRO
from dspex.teleprompt.ensemble import Ensemble
from dspex.teleprompt.knn_fewshot import KNNFewShot
from dspex.teleprompt.mipro_optimizer_v2 import MIPROv2
from dspex.teleprompt.random_search import BootstrapFewShotWithRandomSearch
from dspex.teleprompt.simba import SIMBA
from dspex.teleprompt.teleprompt import Teleprompter
from dspex.teleprompt.vanilla import LabeledFewShot

BootstrapRS = BootstrapFewShotWithRandomSearch

__all__ = [
    "COPRO",
    "SIMBA",
    "BetterTogether",
    "BootstrapFewShot",
    "BootstrapFewShotWithRandomSearch",
    "BootstrapFinetune",
    "BootstrapRS",
    "Ensemble",
    "KNNFewShot",
    "LabeledFewShot",
    "MIPROv2",
    "Teleprompter",
]


def __getattr__(name: str) -> Any:
    value: Any
    if name == "GEPA":
        from dspex.teleprompt.gepa import GEPA as value
    else:
        # DSPy-only optimizers (AvatarOptimizer, InferRules...): routed to a DSPy worker
        from dspex._dspy_names import resolve

        value = None if name.startswith("__") else resolve(name)
        if value is None:
            raise AttributeError(f"module 'dspex.teleprompt' has no attribute {name!r}")
    globals()[name] = value
    return value
