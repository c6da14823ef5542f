"""Native optimizers with DSPy 3.4.1's classes, arguments and results (``dspy.teleprompt``)."""

from __future__ import annotations

from dspex.teleprompt.bootstrap import BootstrapFewShot
from dspex.teleprompt.ensemble import Ensemble
from dspex.teleprompt.teleprompt import Teleprompter
from dspex.teleprompt.vanilla import LabeledFewShot

__all__ = ["BootstrapFewShot", "Ensemble", "LabeledFewShot", "Teleprompter"]
