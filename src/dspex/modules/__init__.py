"""Native modules: Predict, ChainOfThought, ReAct, ReActV2, BestOfN, Refine, MultiChainComparison,
Parallel, ProgramOfThought, CodeAct, majority, KNN (the ones beyond Predict/ChainOfThought load on first use)."""

from typing import TYPE_CHECKING

from dspex._lazy import lazy_getattr
from dspex.modules.chain_of_thought import ChainOfThought
from dspex.modules.predict import Predict

if TYPE_CHECKING:
    from dspex.modules.aggregation import majority
    from dspex.modules.best_of_n import BestOfN
    from dspex.modules.code_act import CodeAct
    from dspex.modules.knn import KNN
    from dspex.modules.multi_chain_comparison import MultiChainComparison
    from dspex.modules.parallel import Parallel
    from dspex.modules.program_of_thought import ProgramOfThought
    from dspex.modules.react import ReAct
    from dspex.modules.react_v2 import ReActV2
    from dspex.modules.refine import Refine

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

_WHERE = {
    "BestOfN": "dspex.modules.best_of_n",
    "CodeAct": "dspex.modules.code_act",
    "KNN": "dspex.modules.knn",
    "MultiChainComparison": "dspex.modules.multi_chain_comparison",
    "Parallel": "dspex.modules.parallel",
    "ProgramOfThought": "dspex.modules.program_of_thought",
    "ReAct": "dspex.modules.react",
    "ReActV2": "dspex.modules.react_v2",
    "Refine": "dspex.modules.refine",
    "majority": "dspex.modules.aggregation",
}

__getattr__ = lazy_getattr("dspex.modules", _WHERE, globals())
