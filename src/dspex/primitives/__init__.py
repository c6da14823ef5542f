"""Core data types and the module base: Example, Prediction, Completions, Module."""

from dspex.primitives.example import Example
from dspex.primitives.module import Module, Parameter
from dspex.primitives.prediction import Completions, Prediction

__all__ = ["Completions", "Example", "Module", "Parameter", "Prediction"]
