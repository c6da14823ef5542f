"""Pipelines that mix native and DSPy steps: ``dspex.pipeline([...])``.

``dspex.pipeline`` is this module, and it is callable: ``dspex.pipeline(steps, **options)``
builds a :class:`Pipeline` (the public contract), while the step constructors live beside it
as ``dspex.pipeline.parallel``, ``.branch``, ``.map``, ``.reduce``, ``.template``,
``.validate`` and ``.step`` (``map``/``reduce`` never shadow the builtins in ``dspex``).

- :mod:`dspex.pipeline.pipeline` — ``Pipeline``: run/arun/astream, options, as a module.
- :mod:`dspex.pipeline.spec` — step specifications and the step constructors.
- :mod:`dspex.pipeline.steps` — step kinds (module, DSPy, callable, composites).
- :mod:`dspex.pipeline.templates`, :mod:`dspex.pipeline.validation` — native text/check steps.
- :mod:`dspex.pipeline.runner` — timeouts, retries, error attribution, metrics, telemetry.
- :mod:`dspex.pipeline.result` — ``StepResult``, ``PipelineResult``.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from dspex.pipeline.pipeline import Pipeline, pipeline
from dspex.pipeline.result import PipelineResult, StepResult
from dspex.pipeline.spec import branch, map, parallel, reduce, step, template, validate
from dspex.pipeline.steps import Step

__all__ = [
    "Pipeline",
    "PipelineResult",
    "Step",
    "StepResult",
    "branch",
    "map",
    "parallel",
    "pipeline",
    "reduce",
    "step",
    "template",
    "validate",
]


class _CallableModule(types.ModuleType):
    """Makes ``dspex.pipeline(...)`` build a pipeline while ``dspex.pipeline.map`` etc. work."""

    def __call__(self, steps: Any, **options: Any) -> Pipeline:
        return pipeline(steps, **options)


sys.modules[__name__].__class__ = _CallableModule
