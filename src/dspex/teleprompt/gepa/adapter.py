"""The native program adapter GEPA's engine drives (the ``gepa`` library's ``GEPAAdapter``).

A candidate is a dict of predictor name -> instruction. :class:`DspyAdapter` builds the program
for it, scores a batch with native :class:`~dspex.evaluate.Evaluate` (with traces captured by
:func:`~dspex.teleprompt.bootstrap_trace.bootstrap_trace_data` when GEPA wants to reflect),
turns traces into the reflective dataset exactly as DSPy 3.4.1's adapter does (same example
selection, same rng draws, same feedback texts) and asks the instruction proposer for new texts
under the reflection LM. The ``gepa`` library is imported only when a batch is scored.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context
from typing import Any, Protocol

from dspex import settings
from dspex.adapters.types import History
from dspex.adapters.types.base_type import Type
from dspex.errors import CodeInterpreterError
from dspex.evaluate import Evaluate
from dspex.primitives.example import Example
from dspex.primitives.prediction import Prediction
from dspex.teleprompt import bootstrap_trace as bootstrap_trace_module
from dspex.teleprompt.bootstrap_trace import FailedPrediction
from dspex.teleprompt.gepa import flex_utils
from dspex.teleprompt.gepa.engine_state import EngineState
from dspex.teleprompt.gepa.instruction_proposal import InstructionProposer, ReflectiveExample

__all__ = [
    "DSPyTrace",
    "DspyAdapter",
    "LoggerAdapter",
    "PredictorFeedbackFn",
    "ScoreWithFeedback",
    "format_history_for_reflection",
    "require_gepa",
]

logger = logging.getLogger(__name__)

DSPyTrace = list[tuple[Any, dict[str, Any], Prediction]]

_SCORE_MISMATCH = (
    "The score returned by the metric with pred_name is different from the overall metric score. "
    "This can indicate 2 things: Either the metric is non-deterministic (e.g., LLM-as-judge, "
    "Semantic score, etc.) or the metric returned a score specific to pred_name that differs from "
    "the module level score. Currently, GEPA does not support predictor level scoring (support "
    "coming soon), and only requires a feedback text to be provided, which can be specific to the "
    "predictor or program level. GEPA will ignore the differing score returned, and instead use "
    "module level score. You can safely ignore this warning if using a semantic metric, however, "
    "if this mismatch is caused due to predictor scoring, please return module-level scores. To "
    "disable this warning, set warn_on_score_mismatch=False."
)


class LoggerAdapter:
    """GEPA's logger protocol (``log(text)``) onto a ``logging.Logger`` at INFO."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def log(self, x: str) -> None:
        self.logger.info(x)


class ScoreWithFeedback(Prediction):
    """What a GEPA metric may return: ``score``, ``feedback`` and optional ``objective_scores``."""

    score: float
    feedback: str
    objective_scores: dict[str, float] | None


class PredictorFeedbackFn(Protocol):
    def __call__(
        self,
        predictor_output: dict[str, Any],
        predictor_inputs: dict[str, Any],
        module_inputs: Example,
        module_outputs: Prediction,
        captured_trace: DSPyTrace,
    ) -> ScoreWithFeedback: ...


def require_gepa() -> None:
    """Raise a clear error when the ``gepa`` library (the ``optimizers`` extra) is missing."""
    try:
        import gepa  # noqa: F401
    except ImportError as exc:
        from dspex.errors import ConfigurationError

        raise ConfigurationError(
            f"GEPA needs the optimizers extra ({exc.name or 'gepa'} is missing): "
            "pip install 'dspex[optimizers]'"
        ) from None


def format_history_for_reflection(history: History) -> str:
    """A ``History`` as the ``Context`` text custom proposers see."""
    lines = "".join(f"  {i}: {message}\n" for i, message in enumerate(history.messages))
    return f"```json\n{lines}```"


def _score_parts(score: Any) -> tuple[Any, dict[str, float]]:
    if isinstance(score, Prediction):
        return score.score, dict(score.get("objective_scores") or {})
    return score, {}


class DspyAdapter:
    """GEPA's adapter for a native program (DSPy 3.4.1's ``DspyAdapter`` arguments)."""

    def __init__(
        self,
        student_module: Any,
        metric_fn: Callable[..., Any],
        feedback_map: dict[str, Callable[..., Any]],
        failure_score: float = 0.0,
        num_threads: int | None = None,
        add_format_failure_as_feedback: bool = False,
        rng: random.Random | None = None,
        reflection_lm: Any = None,
        custom_instruction_proposer: Any = None,
        custom_code_proposer: Any = None,
        warn_on_score_mismatch: bool = True,
        reflection_minibatch_size: int | None = None,
    ) -> None:
        self.student = student_module
        self.metric_fn = metric_fn
        self.feedback_map = feedback_map
        self.failure_score = failure_score
        self.num_threads = num_threads
        self.add_format_failure_as_feedback = add_format_failure_as_feedback
        self.rng = rng or random.Random(0)
        self.reflection_lm = reflection_lm
        if custom_instruction_proposer is None:
            custom_instruction_proposer = InstructionProposer()
        self.custom_instruction_proposer = custom_instruction_proposer
        self._builtin_instruction_proposer = isinstance(
            custom_instruction_proposer, InstructionProposer
        )
        self.custom_code_proposer = custom_code_proposer
        self.flex = flex_utils.FlexComponents(student_module, custom_code_proposer)
        """The student's Flex code components (their paths, seed sources, code proposals)."""
        self.warn_on_score_mismatch = warn_on_score_mismatch
        self.reflection_minibatch_size = reflection_minibatch_size
        self.budget: Any = None
        """A :class:`~dspex.teleprompt.budget.CallBudget` whose phase this adapter names."""
        self.engine_state = EngineState()
        self.seed_scores: tuple[dict[str, str], list[Any]] | None = None
        """A resumed run's saved seed-candidate valset scores: the engine evaluates the seed
        again before it loads its saved state (and then drops that evaluation), so the first
        such evaluation is answered from them instead of paying for it."""

    def _phase(self, name: str) -> None:
        if self.budget is not None:
            self.budget.phase = name

    # ------------------------------------------------------------------ candidates
    def build_program(self, candidate: dict[str, str]) -> Any:
        """A copy of the student with each named predictor's instruction from ``candidate``."""
        program = self.student.deepcopy()
        flex_utils.rebind_flex_code(program, candidate)  # a Flex's code component: its source
        for name, predictor in program.named_predictors():
            if name in candidate:
                predictor.signature = predictor.signature.with_instructions(candidate[name])
        return program

    def propose_new_texts(
        self,
        candidate: dict[str, str],
        reflective_dataset: dict[str, list[dict[str, Any]]],
        components_to_update: list[str],
    ) -> dict[str, str]:
        reflection_lm = self.reflection_lm or settings.current().lm
        self._phase("reflection")
        code, components_to_update = self.flex.propose(
            candidate, reflective_dataset, components_to_update, reflection_lm,
            custom_instruction_proposer=not self._builtin_instruction_proposer,
        )  # fmt: skip
        if not components_to_update:
            return code
        with settings.context(lm=reflection_lm):
            return code | dict(
                self.custom_instruction_proposer(
                    candidate=candidate,
                    reflective_dataset=reflective_dataset,
                    components_to_update=components_to_update,
                )
            )

    # ------------------------------------------------------------------ scoring
    def _callback_metadata(self, batch: list[Any]) -> dict[str, Any]:
        if self.reflection_minibatch_size is None or len(batch) > self.reflection_minibatch_size:
            return {"metric_key": "eval_full"}
        return {"disable_logging": True}

    def evaluate(
        self,
        batch: list[Any],
        candidate: dict[str, str],
        capture_traces: bool = False,
        num_threads: int | None = None,
    ) -> Any:
        """Score ``candidate`` on ``batch`` (GEPA's ``EvaluationBatch``), with traces if asked."""
        num_threads = self.num_threads if num_threads is None else num_threads
        if self.seed_scores is not None and not capture_traces:
            seed, scores = self.seed_scores
            self.seed_scores = None
            if candidate == seed and len(batch) == len(scores):
                return self._make_evaluation_batch([None] * len(batch), list(scores), None)
        self._phase("evaluate")
        try:
            program = self.build_program(candidate)
        except (SyntaxError, CodeInterpreterError) as exc:  # a Flex candidate that cannot bind
            logger.warning("Candidate failed to build (%s); scoring the batch as failures.", exc)
            return self._make_evaluation_batch([None] * len(batch), [None] * len(batch), [] if capture_traces else None)  # fmt: skip
        metadata = self._callback_metadata(batch)
        if self.flex.paths:  # scored with the program's trace (a metric's ``program_trace``)
            return flex_utils.evaluate_with_trace(
                program, batch, metric_fn=self.metric_fn, num_threads=num_threads,
                failure_score=self.failure_score, callback_metadata=metadata,
                capture_traces=capture_traces,
            )  # fmt: skip
        if capture_traces:
            # Looked up on the module at call time, as DSPy does (tests patch it there).
            trajectories = bootstrap_trace_module.bootstrap_trace_data(
                program=program,
                dataset=batch,
                metric=self.metric_fn,
                num_threads=num_threads,
                raise_on_error=False,
                capture_failed_parses=True,
                failure_score=self.failure_score,
                format_failure_score=self.failure_score,
                callback_metadata=metadata,
            )
            # Examples whose program raised are missing: keep outputs batch-sized.
            outputs: list[Any] = [None] * len(batch)
            raw_scores: list[Any] = [None] * len(batch)
            for item in trajectories:
                outputs[item["example_ind"]] = item["prediction"]
                raw_scores[item["example_ind"]] = item.get("score")
            return self._make_evaluation_batch(outputs, raw_scores, trajectories)
        if not batch:
            return self._make_evaluation_batch([], [], None)
        evaluator = Evaluate(
            devset=batch,
            metric=self.metric_fn,
            num_threads=num_threads,
            failure_score=self.failure_score,
            provide_traceback=True,
            max_errors=len(batch) * 100,
        )
        results = evaluator(program, callback_metadata=metadata).results
        return self._make_evaluation_batch([r[1] for r in results], [r[2] for r in results], None)

    def _make_evaluation_batch(
        self, outputs: list[Any], raw_scores: list[Any], trajectories: list[Any] | None
    ) -> Any:
        from gepa.core.adapter import EvaluationBatch

        parts = [_score_parts(score) for score in raw_scores]
        scores = [self.failure_score if score is None else score for score, _ in parts]
        objectives = [objective for _, objective in parts]
        return EvaluationBatch(
            outputs=outputs,
            scores=scores,
            trajectories=trajectories,
            objective_scores=objectives if any(objectives) else None,
        )

    def batch_evaluate(
        self, items: list[tuple[dict[str, str], list[Any]]], *, capture_traces: bool = True
    ) -> list[Any]:
        """Several (candidate, batch) pairs at once, sharing ``num_threads`` between them;
        each runs in the caller's context (settings, callbacks).

        One pair (every iteration of GEPA's default strategy) runs in the caller's thread, on
        its event loop and warm connections: a fresh thread would start a fresh loop and
        reconnect on every iteration, for nothing to overlap."""
        from dspex.teleprompt.limits import default_threads

        total = self.num_threads or default_threads()
        if len(items) == 1:
            candidate, batch = items[0]
            return [
                self.evaluate(batch, candidate, capture_traces=capture_traces, num_threads=total)
            ]
        workers = min(len(items), total) or 1
        share, extra = divmod(total, workers)
        work = [
            (copy_context(), candidate, batch, share + (index < extra))
            for index, (candidate, batch) in enumerate(items)
        ]

        def run(job: tuple[Any, dict[str, str], list[Any], int]) -> Any:
            context, candidate, batch, threads = job
            return context.run(
                self.evaluate, batch, candidate, capture_traces=capture_traces, num_threads=threads
            )

        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(run, work))

    def get_adapter_state(self) -> dict[str, Any]:
        """What the engine saves with its state before every iteration: this adapter's
        generator and the engine's own unsaved run state (:mod:`.engine_state`)."""
        state: dict[str, Any] = {"rng_state": self.rng.getstate()}
        engine = self.engine_state.capture()
        if engine:
            state["engine_state"] = engine
        return state

    def set_adapter_state(self, state: dict[str, Any]) -> None:
        """Called by the engine when its run starts (``state`` is empty unless resumed)."""
        self.engine_state.bind(self)
        if "rng_state" in state:
            self.rng.setstate(state["rng_state"])
        self.engine_state.restore(state.get("engine_state") or {})

    # ------------------------------------------------------------------ reflection
    def make_reflective_dataset(
        self, candidate: dict[str, str], eval_batch: Any, components_to_update: list[str]
    ) -> dict[str, list[ReflectiveExample]]:
        """Per component: one reflective example per traced run of its predictor."""
        program = self.build_program(candidate)
        predictors = dict(program.named_predictors())
        dataset: dict[str, list[ReflectiveExample]] = {}
        for name in components_to_update:
            if name in self.flex.paths:  # a Flex's code reflects on whole-program I/O
                if records := flex_utils.code_reflective_records(eval_batch):
                    dataset[name] = records  # type: ignore[assignment]
                continue
            if name not in predictors:
                raise AssertionError(f"Predictor not found: {name}")
            items = [
                item
                for data in eval_batch.trajectories or []
                if (item := self._reflective_example(name, predictors[name], data)) is not None
            ]
            if not items:
                logger.warning(f"  No valid reflective examples found for {name}")
                continue
            dataset[name] = items
        if not dataset:
            raise Exception("No valid predictions found for any module.")  # GEPA catches it
        return dataset

    def _reflective_example(self, name: str, predictor: Any, data: Any) -> Any:
        trace, prediction = data["trace"], data["prediction"]
        module_score = data["score"]
        if hasattr(module_score, "score"):
            module_score = module_score["score"]
        runs = [t for t in trace if t[0].signature.equals(predictor.signature)]
        if not self.add_format_failure_as_feedback:
            runs = [t for t in runs if not isinstance(t[2], FailedPrediction)]
        if not runs:
            return None
        selected = next((t for t in runs if isinstance(t[2], FailedPrediction)), None)
        if selected is None:
            if isinstance(prediction, FailedPrediction):
                return None
            selected = self.rng.choice(runs)
        inputs, outputs = selected[1], selected[2]
        example: dict[str, Any] = {
            "Inputs": self._reflective_inputs(inputs),
            "Generated Outputs": self._reflective_outputs(outputs),
        }
        if isinstance(outputs, FailedPrediction):
            from dspex.adapters.chat import ChatAdapter

            structure = "".join(
                f"{m['role']}: {m['content']}\n"
                for m in ChatAdapter().format(predictor.signature, [], {})
            )
            example["Feedback"] = (
                "Your output failed to parse. Follow this structure:\n" + structure
            )
            return example
        feedback = self.feedback_map[name](
            predictor_output=outputs,
            predictor_inputs=inputs,
            module_inputs=data["example"],
            module_outputs=prediction,
            captured_trace=trace,
        )
        example["Feedback"] = feedback["feedback"]
        if feedback["score"] != module_score:
            if self.warn_on_score_mismatch:
                logger.warning(_SCORE_MISMATCH)
                self.warn_on_score_mismatch = False
            feedback["score"] = module_score
        return example

    def _reflective_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        histories = [key for key, value in inputs.items() if isinstance(value, History)]
        if len(histories) > 1:
            raise AssertionError("a predictor call has more than one History input")
        shown: dict[str, Any] = {}
        if histories:
            history = inputs[histories[0]]
            shown["Context"] = (
                history
                if self._builtin_instruction_proposer
                else format_history_for_reflection(history)
            )
        for key, value in inputs.items():
            if key in histories:
                continue
            keep = self._builtin_instruction_proposer or isinstance(value, Type)
            shown[key] = value if keep else str(value)
        return shown

    def _reflective_outputs(self, outputs: Any) -> dict[str, Any] | str:
        if isinstance(outputs, FailedPrediction):
            return (
                "Couldn't parse the output as per the expected output format. The model's raw "
                f"response was:\n```\n{outputs.completion_text}\n```\n\n"
            )
        return {
            key: value if self._builtin_instruction_proposer else str(value)
            for key, value in outputs.items()
        }

    def stripped_lm_call(self, x: str) -> list[str]:
        """The reflection LM's completions for prompt ``x``, as strings."""
        texts: list[str] = []
        for output in self.reflection_lm(x):
            if type(output) is str:
                texts.append(output)
            elif type(output) is dict:
                if "text" not in output:
                    raise KeyError("Missing 'text' field in the output from the base LM!")
                texts.append(output["text"])
            else:
                raise TypeError("Unexpected output type from the base LM! Expected str or dict")
        return texts
