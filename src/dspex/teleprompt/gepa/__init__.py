"""Native ``GEPA`` (``dspy.teleprompt.gepa``): the optimizer, its program adapter and proposers.

The ``gepa`` library (the ``optimizers`` extra) is imported only when ``compile`` runs.
"""

from dspex.teleprompt.gepa.gepa import GEPA
from dspex.teleprompt.gepa.instruction_proposal import InstructionProposer

__all__ = ["GEPA", "InstructionProposer"]
