"""GEPA over ``Flex`` (DSPy 3.4.1's ``dspy.teleprompt.gepa.gepa_flex_utils``): code components.

A ``Flex`` submodule is one GEPA component named by its parameter path, whose text is the whole
``module_src``. These helpers find those components, show the code proposer the Flex's
signature and tools, ask the reflection LM for a revised source (:func:`propose_code`, whose
prompt is DSPy's, byte for byte), rebind candidates onto a program copy, and score with the
execution trace (:func:`evaluate_with_trace`): a metric declaring ``program_trace`` sees it.
A Flex's code reflects on the whole program's inputs, outputs and feedback per example
(:func:`code_reflective_records`), not on predictor traces.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

from dspex import settings
from dspex.errors import LMError
from dspex.modules.flex.catalog import PRIMITIVES_CATALOG
from dspex.modules.flex.context import strip_code_fences
from dspex.modules.flex.flex import Flex
from dspex.modules.predict import Predict
from dspex.primitives.prediction import Prediction
from dspex.signatures import InputField, OutputField, Signature
from dspex.teleprompt import bootstrap_trace as bootstrap_trace_module
from dspex.teleprompt.bootstrap_trace import FailedPrediction

__all__ = [
    "CodeProposalSignature",
    "FlexComponents",
    "code_reflective_records",
    "enumerate_flex_submodules",
    "evaluate_with_trace",
    "flex_task_context",
    "propose_code",
    "rebind_flex_code",
]

logger = logging.getLogger(__name__)


def enumerate_flex_submodules(root: Any) -> dict[str, Flex]:
    """Parameter path -> ``Flex`` for every code-optimizable submodule of ``root``."""
    return {name: sub for name, sub in root.named_parameters() if isinstance(sub, Flex)}


def flex_task_context(student_module: Any) -> tuple[dict[str, str], dict[str, str]]:
    """Per Flex path: the task description (its signature spec) and the context blurb (its
    tools, sandboxed) the code proposer is shown."""
    descriptions: dict[str, str] = {}
    blurbs: dict[str, str] = {}
    for path, flex in enumerate_flex_submodules(student_module).items():
        ctx = getattr(flex, "_flex_ctx", None)
        if ctx is not None:
            descriptions[path] = ctx.render_signature_spec()
            blurbs[path] = ctx.render_context_blurb(sandboxed=True)
    return descriptions, blurbs


def _render_prediction(prediction: Any) -> Any:
    if isinstance(prediction, FailedPrediction):
        return f"FailedPrediction: {prediction.completion_text}"
    if isinstance(prediction, Prediction):
        try:
            return {k: str(v) for k, v in prediction.items()}
        except Exception:
            pass
    return str(prediction)


def _format_failures(records: list[dict[str, Any]]) -> str:
    if not records:
        return "(no failing examples available)"
    return "\n\n".join(
        f"=== Example {i} ===\n"
        f"Inputs:\n{record.get('Inputs')!r}\n"
        f"Generated Outputs:\n{record.get('Generated Outputs')!r}\n"
        f"Feedback:\n{record.get('Feedback')}"
        for i, record in enumerate(records)
    )


class CodeProposalSignature(Signature):
    """Revise the full source code of a dspy.Flex submodule.

    You receive the submodule's task description (its Signature), the available context (any tools
    and style notes), the catalog of allowed primitives, the module's current source, and a batch
    of failing examples with feedback. Produce a revised source that fixes the observed failures
    and follows the catalog.

    The source is ONE ``dspy.Module`` subclass with two coupled methods, and you MUST output the
    entire, internally-consistent class:
      1. ``def __init__(self):`` calling ``super().__init__()`` and assigning the predictors it
         needs. Pick the simplest primitive that fits each step: ``dspy.Predict("...")`` for a
         direct call (the common default), ``dspy.ChainOfThought("...")`` when explicit reasoning
         helps, and ``dspy.RLM`` / ``dspy.ReActV2`` when the step must call tools or explore a
         large/structured input. Assign no predictors at all if the task needs no LM.
      2. ``def forward(self, **inputs):`` that calls those predictors as ``self.<name>`` and
         returns ``dspy.Prediction(<output fields>=...)``.
    Because ``forward`` calls predictors by name, never rename a predictor in one place without
    updating the other.

    Tools are OPTIONAL — use them only when a step genuinely needs one; many good modules are just
    a ``dspy.Predict`` or two plus plain Python. When you do use tools, they come from two places.
    (1) Any listed in ``available_context`` are in scope by name — wire the useful ones into
    ``dspy.RLM(..., tools=[...])`` / ``dspy.ReActV2(..., tools=[...])`` or call them directly
    (reference them by the exact names; do not import or redefine them). If ``available_context``
    is '(no extra context)', no tools were provided — don't reference any.
    (2) AUTHOR your own: when a sub-step needs a capability the provided tools don't cover, define a
    documented helper nested inside ``forward`` and call it directly. Authored helpers live in this
    source, so they are optimized and persisted exactly like the rest of the code. They run in the
    sandbox and cannot be handed to a bridged sub-predictor, so only the provided tools may be wired
    into ``dspy.RLM``/``dspy.ReActV2`` via ``tools=[...]``.

    Optimize the predictors' INSTRUCTIONS, not just the code structure. Each predictor's
    natural-language instructions live in this source — construct a predictor over
    ``dspy.Signature("inputs -> outputs", "instructions")`` and refine those instructions from the
    failing examples and feedback (add a clear task definition, domain knowledge the model lacked,
    the required output format, and rules that prevent the observed errors). These predictors are
    inside a dspy.Flex module, so this source is the ONLY place their prompts get optimized. See the primitives
    catalog's "Writing and refining instructions" section for how. Fix instructions when a failure is about
    WHAT the model should do or know; change the structure when it is about HOW steps are wired.
    """

    task_description: str = InputField(
        desc="The submodule's Signature: name, objective, input and output fields."
    )
    available_context: str = InputField(
        desc="Tools (in scope by name) and style notes available to the module. May be '(no extra context)'."
    )
    primitives_catalog: str = InputField(
        desc="Catalog of allowed primitives and conventions the revised code must follow."
    )
    current_source: str = InputField(
        desc="The module's current full source: one dspy.Module subclass (its __init__ and forward)."
    )
    failures: str = InputField(
        desc="A batch of failing examples and feedback. Diagnose them and revise the module to fix them."
    )
    revised_source: str = OutputField(
        desc='The full revised module source: one `dspy.Module` subclass with `__init__` (predictors, including any refined `dspy.Signature(..., "instructions")`) and `forward`.'
    )


def propose_code(
    code_keys: list[str],
    candidate: dict[str, str],
    reflective_dataset: dict[str, list[dict[str, Any]]],
    task_descriptions: dict[str, str],
    context_blurbs: dict[str, str],
    reflection_lm: Any,
) -> dict[str, str]:
    """A revised ``module_src`` per code component from ``reflection_lm``; a component whose
    proposal fails keeps its source (an LM error stops the run, as in DSPy)."""
    proposer = Predict(CodeProposalSignature)
    revised: dict[str, str] = {}
    with settings.context(lm=reflection_lm):
        for key in code_keys:
            try:
                out = proposer(
                    task_description=task_descriptions.get(key, key),
                    available_context=context_blurbs.get(key, "(no extra context)"),
                    primitives_catalog=PRIMITIVES_CATALOG,
                    current_source=candidate[key],
                    failures=_format_failures(reflective_dataset.get(key, [])),
                )
                revised[key] = strip_code_fences(out.revised_source)
            except LMError:
                raise
            except Exception as exc:
                logger.warning("Code proposer failed on %s (%s); keeping original.", key, exc)
                revised[key] = candidate[key]
    return revised


def rebind_flex_code(program: Any, candidate: dict[str, str]) -> None:
    """Bind each Flex of ``program`` whose path ``candidate`` names to that source (a source
    that does not parse raises here; one that fails at run time fails per example)."""
    for path, flex in enumerate_flex_submodules(program).items():
        if path in candidate:
            flex._bind_code(candidate[path])


def code_reflective_records(eval_batch: Any) -> list[dict[str, Any]]:
    """One record per traced example: the program's inputs, its outputs and the feedback."""
    records: list[dict[str, Any]] = []
    for data in eval_batch.trajectories or []:
        raw = data.get("score")
        if hasattr(raw, "score"):
            feedback, value = raw.get("feedback") or "", raw["score"]
        else:
            feedback, value = "", raw
        records.append(
            {
                "Inputs": {k: str(v) for k, v in data["example"].inputs().items()},
                "Generated Outputs": _render_prediction(data["prediction"]),
                "Feedback": feedback or f"This trajectory got a score of {value}.",
            }
        )
    return records


def _metric_scoring_kwargs(metric_fn: Callable[..., Any], program_trace: Any) -> dict[str, Any]:
    """The optional GEPA metric parameters ``metric_fn`` declares, for eval-mode scoring."""
    try:
        declared = inspect.signature(metric_fn).parameters
    except (TypeError, ValueError):
        return {}
    offered = {"trace": None, "pred_name": None, "pred_trace": None, "program_trace": program_trace}  # fmt: skip
    return {name: value for name, value in offered.items() if name in declared}


def evaluate_with_trace(
    program: Any,
    batch: list[Any],
    *,
    metric_fn: Callable[..., Any],
    num_threads: int | None,
    failure_score: float,
    callback_metadata: dict[str, Any] | None,
    capture_traces: bool,
) -> Any:
    """GEPA's ``EvaluationBatch`` for a program with Flex submodules: traces are captured
    first, then each example is scored with its trace as ``program_trace`` (``trace`` stays
    ``None``: eval-mode scoring). A metric that raises scores ``failure_score``."""
    from gepa.core.adapter import EvaluationBatch

    traces = bootstrap_trace_module.bootstrap_trace_data(
        program=program,
        dataset=batch,
        metric=None,
        num_threads=num_threads,
        raise_on_error=False,
        capture_failed_parses=True,
        capture_crashes=True,
        failure_score=failure_score,
        format_failure_score=failure_score,
        callback_metadata=callback_metadata,
    )
    outputs: list[Any] = [None] * len(batch)
    scores: list[Any] = [failure_score] * len(batch)
    objectives: list[dict[str, float]] = [{} for _ in batch]
    for item in traces:
        index, prediction = item["example_ind"], item["prediction"]
        outputs[index] = prediction
        result: Any = failure_score
        if not isinstance(prediction, FailedPrediction):
            try:
                kwargs = _metric_scoring_kwargs(metric_fn, item["trace"])
                result = metric_fn(item["example"], prediction, **kwargs)
            except Exception as exc:
                logger.warning(
                    "Metric raised while scoring an example; scoring it at failure_score: %s: %s",
                    type(exc).__name__,
                    exc,
                )
        item["score"] = result  # the reflective dataset reads the feedback from here
        if isinstance(result, Prediction):
            score, objective = result.score, dict(result.get("objective_scores") or {})
        else:
            score, objective = result, {}
        scores[index] = failure_score if score is None else score
        objectives[index] = objective
    return EvaluationBatch(
        outputs=outputs,
        scores=scores,
        trajectories=traces if capture_traces else None,
        objective_scores=objectives if any(objectives) else None,
    )


class FlexComponents:
    """The Flex code components of one GEPA student, as GEPA's adapter uses them: their paths,
    the seed sources, and the proposals for the code keys of an update (the built-in code
    proposer, or ``custom_code_proposer`` with DSPy's keyword arguments)."""

    def __init__(self, student: Any, custom_code_proposer: Any = None) -> None:
        flexes = enumerate_flex_submodules(student)
        self.paths = set(flexes)
        self.seed = {path: str(flex.module_src) for path, flex in flexes.items()}
        self.task_descriptions, self.context_blurbs = flex_task_context(student)
        self.custom_code_proposer = custom_code_proposer
        self._warned = False

    def propose(
        self,
        candidate: dict[str, str],
        reflective_dataset: dict[str, list[dict[str, Any]]],
        components: list[str],
        reflection_lm: Any,
        *,
        custom_instruction_proposer: bool,
    ) -> tuple[dict[str, str], list[str]]:
        """Proposals for the code components among ``components``, and the others (left to
        the instruction proposer)."""
        code_keys = [c for c in components if c in self.paths]
        others = [c for c in components if c not in self.paths]
        if not code_keys:
            return {}, others
        if self.custom_code_proposer is not None:
            with settings.context(lm=reflection_lm):
                proposals = dict(
                    self.custom_code_proposer(
                        candidate=candidate,
                        reflective_dataset=reflective_dataset,
                        components_to_update=code_keys,
                        task_descriptions=self.task_descriptions,
                        context_blurbs=self.context_blurbs,
                    )
                )
        else:
            proposals = propose_code(
                code_keys,
                candidate,
                reflective_dataset,
                self.task_descriptions,
                self.context_blurbs,
                reflection_lm,
            )
            if others and custom_instruction_proposer and not self._warned:
                logger.warning(
                    "A custom instruction_proposer is set, but %d dspy.Flex code component(s) "
                    "are being optimized. The custom proposer handles instruction components "
                    "only; the built-in code proposer rewrites the flex source.",
                    len(code_keys),
                )
                self._warned = True
        return proposals, others
