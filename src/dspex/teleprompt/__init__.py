"""Native optimizers with DSPy 3.4.1's classes, arguments and results (``dspy.teleprompt``).

``GEPA`` (``dspex.teleprompt.gepa``) is imported on first use (it needs the ``gepa`` library).
The DSPy-only optimizers (``AvatarOptimizer``, ``InferRules``...) resolve here to routed
names, built on DSPy in a worker pool.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dspex.teleprompt.bettertogether import BetterTogether
    from dspex.teleprompt.bootstrap import BootstrapFewShot
    from dspex.teleprompt.bootstrap_finetune import BootstrapFinetune
    from dspex.teleprompt.copro_optimizer import COPRO
    from dspex.teleprompt.ensemble import Ensemble
    from dspex.teleprompt.gepa import GEPA  # noqa: F401  (not in __all__: needs the gepa library)
    from dspex.teleprompt.knn_fewshot import KNNFewShot
    from dspex.teleprompt.mipro_optimizer_v2 import MIPROv2
    from dspex.teleprompt.random_search import BootstrapFewShotWithRandomSearch
    from dspex.teleprompt.simba import SIMBA
    from dspex.teleprompt.teleprompt import Teleprompter
    from dspex.teleprompt.vanilla import LabeledFewShot

    BootstrapRS = BootstrapFewShotWithRandomSearch

# Each optimizer is imported from its module on first use: importing one (BootstrapFewShot
# costs ~40 ms) does not import them all (~300 ms with MIPROv2's and BetterTogether's).
_WHERE = {
    "BetterTogether": "dspex.teleprompt.bettertogether",
    "BootstrapFewShot": "dspex.teleprompt.bootstrap",
    "BootstrapFinetune": "dspex.teleprompt.bootstrap_finetune",
    "COPRO": "dspex.teleprompt.copro_optimizer",
    "Ensemble": "dspex.teleprompt.ensemble",
    "GEPA": "dspex.teleprompt.gepa",
    "KNNFewShot": "dspex.teleprompt.knn_fewshot",
    "MIPROv2": "dspex.teleprompt.mipro_optimizer_v2",
    "BootstrapFewShotWithRandomSearch": "dspex.teleprompt.random_search",
    "BootstrapRS": "dspex.teleprompt.random_search",
    "SIMBA": "dspex.teleprompt.simba",
    "Teleprompter": "dspex.teleprompt.teleprompt",
    "LabeledFewShot": "dspex.teleprompt.vanilla",
}


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
    module = _WHERE.get(name)
    if module is not None:
        attr = "BootstrapFewShotWithRandomSearch" if name == "BootstrapRS" else name
        value = getattr(importlib.import_module(module), attr)
    elif importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = importlib.import_module(f"{__name__}.{name}")  # a submodule, as once eager
    else:
        # DSPy-only optimizers (AvatarOptimizer, InferRules...): routed to a DSPy worker
        from dspex._dspy_names import resolve

        value = None if name.startswith("__") else resolve(name)
        if value is None:
            raise AttributeError(f"module 'dspex.teleprompt' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})
