"""``Proposer``: the base of instruction proposers (DSPy's ``dspy.propose.propose_base``)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

__all__ = ["Proposer"]


class Proposer(ABC):
    """Proposes instructions for the predictors of a program."""

    @abstractmethod
    def propose_instructions_for_program(self, *args: Any, **kwargs: Any) -> Any:
        """Instructions for every predictor of a program."""

    def propose_instruction_for_predictor(self, *args: Any, **kwargs: Any) -> Any:
        """An instruction for one predictor (``None`` unless a proposer defines it)."""
        return None
