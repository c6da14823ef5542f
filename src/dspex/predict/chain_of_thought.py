"""DSPy's ``dspy.predict.chain_of_thought`` path: the native ``ChainOfThought``."""

from dspex.modules.chain_of_thought import ChainOfThought

__all__ = ["ChainOfThought"]
