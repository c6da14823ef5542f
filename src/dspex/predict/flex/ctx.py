"""DSPy's ``dspy.predict.flex.ctx`` path: :mod:`dspex.modules.flex.context`."""

from dspex.modules.flex.context import FlexContext, render_annotation
from dspex.modules.flex.context import strip_code_fences as _strip_code_fences

__all__ = ["FlexContext", "_strip_code_fences", "render_annotation"]
