"""``GEPA``: reflective prompt evolution on the ``gepa`` library, with a native program adapter.

DSPy 3.4.1's optimizer (same arguments, defaults, budget rule and result): the ``gepa`` engine
selects candidates, samples minibatches and merges; every program run, trace and reflection
call goes through :class:`~dspex.teleprompt.gepa.adapter.DspyAdapter` on the native engine
(Evaluate with bounded concurrency; ``num_threads=1`` keeps DSPy's order of LM requests).
``dspy.Flex`` code components are not supported (DSPex has no ``Flex``): only predictor
instructions are optimized. Needs the ``optimizers`` extra (``pip install dspex[optimizers]``).

DSPex only: ``max_lm_calls``/``max_cost`` stop the run between GEPA iterations once spent
(the best candidate so far is returned; ``run_summary.stopped`` names the budget), and
``compiled.run_summary`` holds the LM calls, tokens and cost of the ``evaluate`` and
``reflection`` phases. ``run_dir`` makes a run resumable: the ``gepa`` library keeps its own
state there (``run_dir/gepa/gepa_state.bin``, saved before every iteration: candidates,
scores, Pareto fronts, metric calls spent), and a run started again with the same directory
(and the same arguments, student and data: checked, see :class:`~dspex.teleprompt.run.Run`)
goes on from the last saved iteration within the same ``max_metric_calls``. What the library
leaves out of its state (its random generator, the minibatch sampler's epoch, the merge
schedule) is saved with it through the adapter (:mod:`.engine_state`), so a resumed run makes
the uninterrupted run's draws and ends with its program; the seed candidate's valset scores
are read back instead of evaluated again. ``log_dir`` gives the library a directory without
the identity check, as in DSPy (resumed the same way).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import os
import random
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from dspex import settings
from dspex.errors import OptimizerError
from dspex.primitives.example import Example
from dspex.primitives.prediction import Prediction
from dspex.teleprompt.gepa.adapter import (
    DspyAdapter,
    DSPyTrace,
    LoggerAdapter,
    ScoreWithFeedback,
    require_gepa,
)
from dspex.teleprompt.run import Run, RunOptions
from dspex.teleprompt.teleprompt import Teleprompter

__all__ = ["AUTO_RUN_SETTINGS", "GEPA", "DspyGEPAResult", "GEPAFeedbackMetric"]

logger = logging.getLogger(__name__)

AUTO_RUN_SETTINGS = {"light": {"n": 6}, "medium": {"n": 12}, "heavy": {"n": 18}}


class GEPAFeedbackMetric(Protocol):
    """``metric(gold, pred, trace, pred_name, pred_trace)`` -> a float or ``ScoreWithFeedback``."""

    def __call__(
        self,
        gold: Example,
        pred: Prediction,
        trace: DSPyTrace | None,
        pred_name: str | None,
        pred_trace: DSPyTrace | None,
    ) -> float | ScoreWithFeedback: ...


@dataclass(frozen=True)
class DspyGEPAResult:
    """What a GEPA run found (``compiled.detailed_results`` with ``track_stats=True``)."""

    candidates: list[Any]
    parents: list[list[int | None]]
    val_aggregate_scores: list[float]
    val_subscores: list[dict[Any, float]]
    per_val_instance_best_candidates: dict[Any, set[int]]
    discovery_eval_counts: list[int]
    best_outputs_valset: dict[Any, list[tuple[int, Any]]] | None = None
    total_metric_calls: int | None = None
    num_full_val_evals: int | None = None
    log_dir: str | None = None
    seed: int | None = None
    val_aggregate_subscores: list[dict[str, float]] | None = None
    per_objective_best_candidates: dict[str, set[int]] | None = None
    objective_pareto_front: dict[str, float] | None = None

    @property
    def best_idx(self) -> int:
        scores = self.val_aggregate_scores
        return max(range(len(scores)), key=lambda i: scores[i])

    @property
    def best_candidate(self) -> Any:
        return self.candidates[self.best_idx]

    @property
    def highest_score_achieved_per_val_task(self) -> dict[Any, float]:
        return {
            val_id: self.val_subscores[next(iter(best))][val_id]
            for val_id, best in self.per_val_instance_best_candidates.items()
        }

    @staticmethod
    def _candidate_components(program: Any) -> dict[str, str]:
        from dspex.teleprompt.gepa.flex_utils import enumerate_flex_submodules

        instructions = {name: p.signature.instructions for name, p in program.named_predictors()}
        code = {path: f.module_src for path, f in enumerate_flex_submodules(program).items()}
        return instructions | code

    def to_dict(self) -> dict[str, Any]:
        def lists(sets: dict[Any, set[int]] | None) -> dict[Any, list[int]] | None:
            return None if sets is None else {key: list(s) for key, s in sets.items()}

        return {
            "candidates": [self._candidate_components(c) for c in self.candidates],
            "parents": self.parents,
            "val_aggregate_scores": self.val_aggregate_scores,
            "best_outputs_valset": self.best_outputs_valset,
            "val_subscores": self.val_subscores,
            "per_val_instance_best_candidates": lists(self.per_val_instance_best_candidates),
            "val_aggregate_subscores": self.val_aggregate_subscores,
            "per_objective_best_candidates": lists(self.per_objective_best_candidates),
            "objective_pareto_front": self.objective_pareto_front,
            "discovery_eval_counts": self.discovery_eval_counts,
            "total_metric_calls": self.total_metric_calls,
            "num_full_val_evals": self.num_full_val_evals,
            "log_dir": self.log_dir,
            "seed": self.seed,
            "best_idx": self.best_idx,
        }

    @staticmethod
    def from_gepa_result(gepa_result: Any, adapter: DspyAdapter) -> DspyGEPAResult:
        return DspyGEPAResult(
            candidates=[adapter.build_program(c) for c in gepa_result.candidates],
            parents=gepa_result.parents,
            val_aggregate_scores=gepa_result.val_aggregate_scores,
            best_outputs_valset=gepa_result.best_outputs_valset,
            val_subscores=gepa_result.val_subscores,
            per_val_instance_best_candidates=gepa_result.per_val_instance_best_candidates,
            discovery_eval_counts=gepa_result.discovery_eval_counts,
            val_aggregate_subscores=gepa_result.val_aggregate_subscores,
            per_objective_best_candidates=gepa_result.per_objective_best_candidates,
            objective_pareto_front=gepa_result.objective_pareto_front,
            total_metric_calls=gepa_result.total_metric_calls,
            num_full_val_evals=gepa_result.num_full_val_evals,
            log_dir=gepa_result.run_dir,
            seed=gepa_result.seed,
        )


def _saved_seed_scores(gepa_dir: str, size: int) -> tuple[dict[str, str], list[Any]] | None:
    """The seed candidate and its valset scores from a saved ``gepa`` state (None if absent
    or not a plain list valset's)."""
    from gepa.core.state import GEPAState

    try:
        saved: Any = GEPAState.load(gepa_dir)
    except Exception:  # the engine loads it again and reports what is wrong
        return None
    scores = saved.prog_candidate_val_subscores[0]
    if sorted(scores) != list(range(size)):
        return None
    return dict(saved.program_candidates[0]), [scores[i] for i in range(size)]


def auto_budget(
    num_preds: int,
    num_candidates: int,
    valset_size: int,
    minibatch_size: int = 35,
    full_eval_steps: int = 5,
) -> int:
    """DSPy 3.4.1's metric-call budget for ``auto`` (same arithmetic, same errors)."""
    trials = int(max(2 * (num_preds * 2) * math.log2(num_candidates), 1.5 * num_candidates))
    if trials < 0 or valset_size < 0 or minibatch_size < 0:
        raise ValueError("num_trials, valset_size, and minibatch_size must be >= 0.")
    if full_eval_steps < 1:
        raise ValueError("full_eval_steps must be >= 1.")
    # The seed's full evaluation, up to 5 bootstrap trials per candidate, the minibatches...
    total = valset_size + num_candidates * 5 + trials * minibatch_size
    if trials == 0:
        return total
    # ...and the periodic full evaluations (one more at the end when trials < steps).
    fulls = (trials + 1) // full_eval_steps + 1 + (1 if trials < full_eval_steps else 0)
    return total + fulls * valset_size


class GEPA(RunOptions, Teleprompter):
    """DSPy 3.4.1's ``GEPA`` (see the module docstring); ``metric`` takes five arguments."""

    def __init__(
        self,
        metric: GEPAFeedbackMetric,
        *,
        auto: Literal["light", "medium", "heavy"] | None = None,
        max_full_evals: int | None = None,
        max_metric_calls: int | None = None,
        reflection_minibatch_size: int = 3,
        candidate_selection_strategy: Literal["pareto", "current_best"] = "pareto",
        reflection_lm: Any = None,
        skip_perfect_score: bool = True,
        add_format_failure_as_feedback: bool = False,
        instruction_proposer: Any = None,
        code_proposer: Any = None,
        component_selector: Any = "round_robin",
        use_merge: bool = True,
        max_merge_invocations: int | None = 5,
        num_threads: int | None = None,
        failure_score: float = 0.0,
        perfect_score: float = 1.0,
        log_dir: str | None = None,
        track_stats: bool = False,
        use_wandb: bool = False,
        wandb_api_key: str | None = None,
        wandb_init_kwargs: dict[str, Any] | None = None,
        track_best_outputs: bool = False,
        warn_on_score_mismatch: bool = True,
        use_mlflow: bool = False,
        seed: int | None = 0,
        gepa_kwargs: dict[str, Any] | None = None,
        max_lm_calls: int | None = None,
        max_cost: float | None = None,
        run_dir: str | os.PathLike[str] | None = None,
        resume: str | os.PathLike[str] | None = None,
    ) -> None:
        try:
            inspect.signature(metric).bind(None, None, None, None, None)
        except TypeError as e:
            raise TypeError(
                "GEPA metric must accept five arguments: (gold, pred, trace, pred_name, pred_trace). "
                "See https://dspy.ai/api/optimizers/GEPA for details."
            ) from e
        self.metric_fn = metric
        budgets = (max_metric_calls is not None) + (max_full_evals is not None) + (auto is not None)
        assert budgets == 1, (
            "Exactly one of max_metric_calls, max_full_evals, auto must be set. "
            f"You set max_metric_calls={max_metric_calls}, "
            f"max_full_evals={max_full_evals}, "
            f"auto={auto}."
        )
        if auto is not None and auto not in AUTO_RUN_SETTINGS:
            raise ValueError(f"auto must be one of {sorted(AUTO_RUN_SETTINGS)}, got {auto!r}")
        self.auto = auto
        self.max_full_evals = max_full_evals
        self.max_metric_calls = max_metric_calls
        self.reflection_minibatch_size = reflection_minibatch_size
        self.candidate_selection_strategy = candidate_selection_strategy
        assert reflection_lm is not None or instruction_proposer is not None, (
            "GEPA requires a reflection language model, or custom instruction proposer to be provided. "
            "Typically, you can use `dspy.LM(model='gpt-5', temperature=1.0, max_tokens=32000)` to get a good reflection model. "
            "Reflection LM is used by GEPA to reflect on the behavior of the program and propose new instructions, and will benefit from a strong model. "
        )
        self.reflection_lm = reflection_lm
        self.skip_perfect_score = skip_perfect_score
        self.add_format_failure_as_feedback = add_format_failure_as_feedback
        self.use_merge = use_merge
        self.max_merge_invocations = max_merge_invocations
        self.num_threads = num_threads
        self.failure_score = failure_score
        self.perfect_score = perfect_score
        self.log_dir = log_dir
        self.track_stats = track_stats
        self.use_wandb = use_wandb
        self.wandb_api_key = wandb_api_key
        self.wandb_init_kwargs = wandb_init_kwargs
        self.warn_on_score_mismatch = warn_on_score_mismatch
        self.use_mlflow = use_mlflow
        if track_best_outputs:
            assert track_stats, "track_stats must be True if track_best_outputs is True."
        self.track_best_outputs = track_best_outputs
        self.seed = seed
        self.custom_instruction_proposer = instruction_proposer
        self.custom_code_proposer = code_proposer
        self.component_selector = component_selector
        self.gepa_kwargs = gepa_kwargs or {}
        if (run_dir is not None or resume is not None) and log_dir is not None:
            raise OptimizerError(
                "give GEPA a run_dir (resumable, checked against the run's arguments and data) "
                "or a log_dir (the gepa library's directory, as in DSPy), not both"
            )
        self._set_run_options(max_lm_calls, max_cost, run_dir, resume=resume)
        if self.gepa_kwargs.get("max_reflection_cost") is not None:
            raise ValueError("max_reflection_cost is not supported by dspy.GEPA yet.")
        if "reflection_prompt_template" in self.gepa_kwargs:
            raise ValueError(
                "reflection_prompt_template cannot be passed via gepa_kwargs when using dspy.GEPA. "
                "DspyAdapter implements its own propose_new_texts, so reflection_prompt_template is unused. "
                "To customize the reflection prompt, pass "
                "instruction_proposer=InstructionProposer(base_instructions=...) instead."
            )

    def auto_budget(
        self,
        num_preds: int,
        num_candidates: int,
        valset_size: int,
        minibatch_size: int = 35,
        full_eval_steps: int = 5,
    ) -> int:
        return auto_budget(num_preds, num_candidates, valset_size, minibatch_size, full_eval_steps)

    # ------------------------------------------------------------------ compile
    def _budget(self, num_components: int, trainset: list[Any], valset: list[Any] | None) -> int:
        if self.auto is not None:
            return self.auto_budget(
                num_preds=max(num_components, 1),
                num_candidates=AUTO_RUN_SETTINGS[self.auto]["n"],
                valset_size=len(valset) if valset is not None else len(trainset),
            )
        if self.max_full_evals is not None:
            return self.max_full_evals * (
                len(trainset) + (len(valset) if valset is not None else 0)
            )
        assert self.max_metric_calls is not None, (
            "Either auto, max_full_evals, or max_metric_calls must be set."
        )
        return self.max_metric_calls

    def _feedback_fn(self, pred_name: str, predictor: Any) -> Any:
        """The per-predictor feedback function (the metric with ``pred_name``/``pred_trace``)."""

        def feedback(
            predictor_output: Any,
            predictor_inputs: dict[str, Any],
            module_inputs: Example,
            module_outputs: Prediction,
            captured_trace: DSPyTrace,
        ) -> Any:
            pred_trace = [(predictor, predictor_inputs, predictor_output)]
            o: Any = self.metric_fn(
                module_inputs, module_outputs, captured_trace, pred_name, pred_trace
            )
            if hasattr(o, "feedback"):
                if o["feedback"] is None:
                    o["feedback"] = f"This trajectory got a score of {o['score']}."
                return o
            return {"score": o, "feedback": f"This trajectory got a score of {o}."}

        return feedback

    def compile(  # type: ignore[override]
        self,
        student: Any,
        *,
        trainset: list[Any],
        teacher: Any = None,
        valset: list[Any] | None = None,
    ) -> Any:
        """Evolve ``student``'s instructions on ``trainset`` (reflection) scored on ``valset``
        (Pareto tracking; ``trainset`` when omitted); returns the best program."""
        require_gepa()
        assert trainset is not None and len(trainset) > 0, "Trainset must be provided and non-empty"
        assert teacher is None, "Teacher is not supported in DspyGEPA yet."
        from dspex.teleprompt.gepa.flex_utils import enumerate_flex_submodules

        predictors = list(student.named_predictors())
        num_components = len(predictors) + len(enumerate_flex_submodules(student))  # Flex: code
        self.max_metric_calls = self._budget(num_components, trainset, valset)
        runs = (
            self.max_metric_calls / len(trainset)
            if valset is None
            else self.max_metric_calls / (len(trainset) + len(valset))
        )
        logger.info(
            f"Running GEPA for approx {self.max_metric_calls} metric calls of the program. "
            f"This amounts to {runs:.2f} full evals on the "
            f"{'train' if valset is None else 'train+val'} set."
        )
        if valset is None:
            logger.warning(
                "No valset provided; Using trainset as valset. GEPA will overfit prompts to the "
                "trainset; provide a separate valset to generalize to unseen tasks."
            )
        valset = valset or trainset
        logger.info(f"Using {len(valset)} examples for tracking Pareto scores.")

        adapter = DspyAdapter(
            student_module=student,
            metric_fn=self.metric_fn,
            feedback_map={name: self._feedback_fn(name, p) for name, p in predictors},
            failure_score=self.failure_score,
            num_threads=self.num_threads,
            add_format_failure_as_feedback=self.add_format_failure_as_feedback,
            rng=random.Random(self.seed),
            reflection_lm=self.reflection_lm,
            custom_instruction_proposer=self.custom_instruction_proposer,
            custom_code_proposer=self.custom_code_proposer,
            warn_on_score_mismatch=self.warn_on_score_mismatch,
            reflection_minibatch_size=self.reflection_minibatch_size,
        )
        reflection = (
            (lambda x: adapter.stripped_lm_call(x)[0]) if self.reflection_lm is not None else None
        )
        engine_adapter: Any = adapter  # structurally a GEPAAdapter
        budget = self.budget
        adapter.budget = budget
        run = self._open_run(
            "GEPA",
            student,
            lm=settings.current().lm,
            trainset=list(trainset),
            valset=list(valset),
        )
        gepa_dir = self.log_dir
        if run.dir is not None:
            gepa_dir = str(run.dir.path / "gepa")
        extra = dict(self.gepa_kwargs)
        added: list[Any] = []
        if gepa_dir is not None:
            added.append(adapter.engine_state)  # a resumed run's merge schedule (never stops)
            if os.path.exists(os.path.join(gepa_dir, "gepa_state.bin")):
                if run.dir is not None:
                    run.resumed.append("gepa_state")
                adapter.seed_scores = _saved_seed_scores(gepa_dir, len(valset))
        if budget.max_lm_calls is not None or budget.max_cost is not None:
            # Checked between GEPA iterations: the run stops cleanly with the best so far.
            added.append(lambda _state: self._spent(run))
        if added:
            stoppers = extra.pop("stop_callbacks", None) or []
            stoppers = list(stoppers) if isinstance(stoppers, list | tuple) else [stoppers]
            extra["stop_callbacks"] = [*stoppers, *added]
        with run:
            budget.check_prices(settings.current().lm, self.reflection_lm)
            run.checkpoint("gepa", {"gepa_run_dir": gepa_dir})  # claims the run directory
            result = self._optimize(
                engine_adapter, reflection, predictors, trainset, valset, extra, gepa_dir
            )
        program = adapter.build_program(result.best_candidate)
        if self.track_stats:
            program.detailed_results = DspyGEPAResult.from_gepa_result(result, adapter)
        program.run_summary = run.summary
        return program

    @staticmethod
    def _spent(run: Run) -> bool:
        if not run.spent:
            return False
        logger.warning(
            "GEPA stopped between iterations: %s spent (%d LM calls, %.6f USD)",
            run.budget.stopped_by,
            run.budget.total,
            run.budget.cost,
        )
        return True

    def _args(self) -> dict[str, Any]:
        """The arguments a resumed run must share (budgets and concurrency may change)."""
        return {
            "metric": self.metric_fn,
            "max_metric_calls": self.max_metric_calls,
            "reflection_minibatch_size": self.reflection_minibatch_size,
            "candidate_selection_strategy": self.candidate_selection_strategy,
            "reflection_lm": self.reflection_lm,
            "skip_perfect_score": self.skip_perfect_score,
            "add_format_failure_as_feedback": self.add_format_failure_as_feedback,
            "component_selector": self.component_selector,
            "use_merge": self.use_merge,
            "max_merge_invocations": self.max_merge_invocations,
            "failure_score": self.failure_score,
            "perfect_score": self.perfect_score,
            "seed": self.seed,
        }

    def _optimize(
        self,
        engine_adapter: Any,
        reflection: Any,
        predictors: list[tuple[str, Any]],
        trainset: list[Any],
        valset: list[Any],
        extra: dict[str, Any],
        gepa_dir: str | None = None,
    ) -> Any:
        """The ``gepa`` engine run with DSPy's settings (``extra``: its other arguments)."""
        from gepa.api import optimize

        return optimize(
            seed_candidate={name: p.signature.instructions for name, p in predictors}
            | engine_adapter.flex.seed,  # each Flex's module_src under its parameter path
            trainset=trainset,
            valset=valset,
            adapter=engine_adapter,
            reflection_lm=reflection,
            candidate_selection_strategy=self.candidate_selection_strategy,
            skip_perfect_score=self.skip_perfect_score,
            reflection_minibatch_size=self.reflection_minibatch_size,
            module_selector=self.component_selector,
            perfect_score=self.perfect_score,
            use_merge=self.use_merge,
            max_merge_invocations=self.max_merge_invocations,  # type: ignore[arg-type]
            max_metric_calls=self.max_metric_calls,
            logger=LoggerAdapter(logger),
            run_dir=gepa_dir,
            use_wandb=self.use_wandb,
            wandb_api_key=self.wandb_api_key,
            wandb_init_kwargs=self.wandb_init_kwargs,
            use_mlflow=self.use_mlflow,
            track_best_outputs=self.track_best_outputs,
            display_progress_bar=False,
            raise_on_exception=True,
            seed=self.seed,  # type: ignore[arg-type]
            **extra,
        )

    async def acompile(
        self,
        student: Any,
        *,
        trainset: list[Any],
        teacher: Any = None,
        valset: list[Any] | None = None,
    ) -> Any:
        """``compile`` for async callers (the ``gepa`` engine is synchronous: a worker thread)."""
        return await asyncio.to_thread(
            self.compile, student, trainset=trainset, teacher=teacher, valset=valset
        )
