"""Core data types and the module base: Example, Prediction, Completions, Module."""

from dspex.primitives.example import Example
from dspex.primitives.module import Module, Parameter
from dspex.primitives.prediction import Completions, Prediction
from dspex.primitives.streaming import StreamChunk

__all__ = ["Completions", "Example", "Module", "Parameter", "Prediction", "StreamChunk"]
