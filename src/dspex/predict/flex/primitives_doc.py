"""DSPy's ``dspy.predict.flex.primitives_doc`` path: :mod:`dspex.modules.flex.catalog`."""

from dspex.modules.flex.catalog import PRIMITIVES_CATALOG

__all__ = ["PRIMITIVES_CATALOG"]
