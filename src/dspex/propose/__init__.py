"""Instruction proposers (DSPy's ``dspy.propose``): ``GroundedProposer`` for MIPROv2."""

from __future__ import annotations

from dspex.propose.grounded_proposer import GroundedProposer
from dspex.propose.propose_base import Proposer

__all__ = ["GroundedProposer", "Proposer"]
