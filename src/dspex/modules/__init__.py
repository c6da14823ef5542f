"""Native modules: Predict, ChainOfThought."""

from dspex.modules.chain_of_thought import ChainOfThought
from dspex.modules.predict import Predict

__all__ = ["ChainOfThought", "Predict"]
