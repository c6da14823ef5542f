"""Native optimizers with DSPy 3.4.1's classes, arguments and results (``dspy.teleprompt``).

Optimizers without a native implementation yet (``MIPROv2``, ``SIMBA``, ``GEPA``)
resolve here to the router's factories, which build them on DSPy in a worker pool.
"""

from __future__ import annotations

from typing import Any

from dspex.teleprompt.bootstrap import BootstrapFewShot
from dspex.teleprompt.copro_optimizer import COPRO
from dspex.teleprompt.ensemble import Ensemble
from dspex.teleprompt.knn_fewshot import KNNFewShot
from dspex.teleprompt.random_search import BootstrapFewShotWithRandomSearch
from dspex.teleprompt.teleprompt import Teleprompter
from dspex.teleprompt.vanilla import LabeledFewShot

BootstrapRS = BootstrapFewShotWithRandomSearch

__all__ = [
    "COPRO",
    "BootstrapFewShot",
    "BootstrapFewShotWithRandomSearch",
    "BootstrapRS",
    "Ensemble",
    "KNNFewShot",
    "LabeledFewShot",
    "Teleprompter",
]

_ROUTED = frozenset({"MIPROv2", "SIMBA", "GEPA"})


def __getattr__(name: str) -> Any:
    if name in _ROUTED:
        from dspex.router.factories import factory

        value = factory(name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dspex.teleprompt' has no attribute {name!r}")
