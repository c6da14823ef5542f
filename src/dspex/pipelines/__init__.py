"""Pipelines that mix native and DSPy steps: ``dspex.pipeline([...])``.

``dspex.pipeline`` is a :class:`PipelineFactory`: call it to build a :class:`Pipeline`
(``dspex.pipeline(steps, **options)``, the public contract); its methods build steps:
``dspex.pipeline.parallel``, ``.branch``, ``.map``, ``.reduce``, ``.template``,
``.validate`` and ``.step`` (so ``map``/``reduce`` never shadow the builtins in ``dspex``).
Both type-check.

- :mod:`dspex.pipelines.base` — ``Pipeline``: run/arun/astream, options, as a module.
- :mod:`dspex.pipelines.spec` — step specifications and the step constructors.
- :mod:`dspex.pipelines.steps` — step kinds (module, DSPy, callable, composites).
- :mod:`dspex.pipelines.templates`, :mod:`dspex.pipelines.validation` — native text/check steps.
- :mod:`dspex.pipelines.runner` — timeouts, retries, error attribution, metrics, telemetry.
- :mod:`dspex.pipelines.result` — ``StepResult``, ``PipelineResult``.
"""

from __future__ import annotations

from typing import Any

from dspex.pipelines import spec
from dspex.pipelines.base import Pipeline, build
from dspex.pipelines.result import PipelineResult, StepResult
from dspex.pipelines.steps import Step

__all__ = [
    "Pipeline",
    "PipelineFactory",
    "PipelineResult",
    "Step",
    "StepResult",
    "pipeline",
]


class PipelineFactory:
    """``dspex.pipeline``: builds pipelines when called, steps through its methods."""

    parallel = staticmethod(spec.parallel)
    branch = staticmethod(spec.branch)
    map = staticmethod(spec.map)
    reduce = staticmethod(spec.reduce)
    step = staticmethod(spec.step)
    template = staticmethod(spec.template)
    validate = staticmethod(spec.validate)

    def __call__(self, steps: Any, **options: Any) -> Pipeline:
        return build(steps, **options)

    def __repr__(self) -> str:
        return (
            "<dspex.pipeline: call it with steps; .parallel/.branch/.map/.reduce/... build steps>"
        )


pipeline = PipelineFactory()
