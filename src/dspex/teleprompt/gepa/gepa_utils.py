"""DSPy's module path for GEPA's adapter pieces (``dspy.teleprompt.gepa.gepa_utils``)."""

from dspex.teleprompt.bootstrap_trace import FailedPrediction, TraceData
from dspex.teleprompt.gepa.adapter import (
    DspyAdapter,
    DSPyTrace,
    LoggerAdapter,
    PredictorFeedbackFn,
    ScoreWithFeedback,
    format_history_for_reflection,
)
from dspex.teleprompt.gepa.instruction_proposal import InstructionProposer, ReflectiveExample

__all__ = [
    "DSPyTrace",
    "DspyAdapter",
    "FailedPrediction",
    "InstructionProposer",
    "LoggerAdapter",
    "PredictorFeedbackFn",
    "ReflectiveExample",
    "ScoreWithFeedback",
    "TraceData",
    "format_history_for_reflection",
]
