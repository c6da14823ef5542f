"""``BetterTogether``: prompt and weight optimizers run in a sequence, best program kept.

DSPy 3.4.1's meta-optimizer (``dspy.teleprompt.bettertogether``), native, on user modules in
the user's process. ``compile(student, trainset=..., strategy="p -> w -> p")`` runs the named
optimizers one after the other, each on the previous one's program:

- the validation set is ``valset``, else the first ``int(valset_ratio * len(trainset))``
  examples of the trainset (``valset_ratio=0``: none); the trainset is shuffled with
  ``Random(seed)`` before each step (``shuffle_trainset_between_steps``);
- the baseline and every step's program are scored on the validation set
  (``eval_candidate_program``); the result is the best-scoring program (earlier wins ties), or
  the latest one without a validation set, with ``candidate_programs`` (best first) and
  ``flag_compilation_error_occurred`` on it. A failing step stops the sequence and is logged;
- LMs are launched before the baseline, relaunched when a step changed the model names
  (fine-tuning), and killed at the end (no-ops for hosted APIs);
- ``optimizer_compile_args`` gives each optimizer extra ``compile`` arguments, validated
  against its ``compile`` signature (``student`` is refused).

Defaults when no optimizer is given: ``p=BootstrapFewShotWithRandomSearch(metric=metric)``,
``w=BootstrapFinetune(metric=metric)``.
"""

from __future__ import annotations

import inspect
import logging
import random
from collections.abc import Callable
from typing import Any

from dspex import settings
from dspex.errors import CallError, OptimizerTypeError
from dspex.teleprompt.bootstrap_finetune import (
    BootstrapFinetune,
    all_predictors_have_lms,
    assert_all_predictors_have_lms,
    kill_lms,
    launch_lms,
    prepare_student,
    prepare_teacher,
)
from dspex.teleprompt.mipro_utils import eval_candidate_program
from dspex.teleprompt.random_search import BootstrapFewShotWithRandomSearch
from dspex.teleprompt.teleprompt import Teleprompter

__all__ = ["BetterTogether", "eval_candidate_program", "kill_lms", "launch_lms"]

logger = logging.getLogger(__name__)


class BetterTogether(Teleprompter):
    """Run prompt (``p``) and weight (``w``) optimizers in a sequence; keep the best program."""

    STRAT_SEP = " -> "

    def __init__(self, metric: Callable[..., Any], **optimizers: Teleprompter) -> None:
        self.metric = metric
        if not optimizers:
            logger.info(
                "No optimizers provided. Using defaults: BootstrapFewShotWithRandomSearch (p) "
                "and BootstrapFinetune (w)."
            )
            optimizers = {
                "p": BootstrapFewShotWithRandomSearch(metric=metric),
                "w": BootstrapFinetune(metric=metric),
            }
        for key, optimizer in optimizers.items():
            if not isinstance(optimizer, Teleprompter):
                raise OptimizerTypeError(
                    f"Optimizer '{key}' must be a Teleprompter, got {type(optimizer).__name__}"
                )
        self.optimizers: dict[str, Teleprompter] = optimizers

    def compile(  # type: ignore[override]
        self,
        student: Any,
        *,
        trainset: list[Any],
        teacher: Any = None,
        valset: list[Any] | None = None,
        num_threads: int | None = None,
        max_errors: int | None = None,
        provide_traceback: bool | None = None,
        seed: int | None = None,
        valset_ratio: float = 0.1,
        shuffle_trainset_between_steps: bool = True,
        strategy: str = "p -> w -> p",
        optimizer_compile_args: dict[str, dict[str, Any]] | None = None,
    ) -> Any:
        logger.info("BetterTogether: strategy %r, %d training examples", strategy, len(trainset))
        student, teachers = self._prepare_student_and_teacher(student, teacher)
        trainset, valset = self._prepare_trainset_and_valset(trainset, valset, valset_ratio)
        max_errors = max_errors if max_errors is not None else settings.current().max_errors
        parsed_strategy = self._prepare_strategy(strategy)
        compile_args = self._prepare_optimizer_compile_args(optimizer_compile_args, teachers)

        student = self._run_strategies(
            student,
            trainset,
            teachers,
            valset,
            num_threads,
            max_errors,
            provide_traceback,
            seed,
            parsed_strategy,
            shuffle_trainset_between_steps,
            compile_args,
        )
        best = student.candidate_programs[0]
        logger.info(
            "BetterTogether: best score %s (strategy %r)",
            best["score"],
            best["strategy"] or "original (no optimization)",
        )
        student._compiled = True
        return student

    # ------------------------------------------------------------------ validation
    def _prepare_student_and_teacher(
        self, student: Any, teacher: Any
    ) -> tuple[Any, list[Any] | None]:
        student = prepare_student(student)
        assert_all_predictors_have_lms(student, role="student")
        if not teacher:
            return student, None
        teachers = teacher if isinstance(teacher, list) else [teacher]
        return student, [prepare_teacher(student, t) for t in teachers]

    def _prepare_trainset_and_valset(
        self, trainset: list[Any], valset: list[Any] | None, valset_ratio: float
    ) -> tuple[list[Any], list[Any] | None]:
        if not trainset:
            raise CallError("trainset cannot be empty")
        if valset_ratio < 0 or valset_ratio >= 1:
            raise CallError(f"valset_ratio must be in range [0, 1), got {valset_ratio}")
        trainset = trainset[:]
        if valset:
            return trainset, valset
        if valset_ratio == 0:
            return trainset, None
        num_val = int(valset_ratio * len(trainset))
        return trainset[num_val:], trainset[:num_val]

    def _prepare_strategy(self, strategy: str) -> list[str]:
        if not strategy or not strategy.strip():
            raise CallError("strategy cannot be empty")
        parsed = strategy.split(self.STRAT_SEP)
        invalid = [s for s in parsed if s not in self.optimizers]
        if invalid:
            raise CallError(
                f"Strategy contains invalid optimizer keys: {invalid}. "
                f"Valid keys are: {list(self.optimizers)}"
            )
        return parsed

    def _prepare_optimizer_compile_args(
        self, optimizer_compile_args: dict[str, dict[str, Any]] | None, teacher: Any
    ) -> dict[str, dict[str, Any]]:
        if not optimizer_compile_args:
            return {}
        for key, compile_args in optimizer_compile_args.items():
            if key not in self.optimizers:
                raise CallError(
                    f"Invalid optimizer key '{key}'. Valid keys are: {list(self.optimizers)}"
                )
            optimizer = self.optimizers[key]
            self._validate_compile_args(optimizer, key, compile_args)
            if type(optimizer).__name__ == "GEPA" and teacher is not None:
                raise CallError(
                    "GEPA does not accept a teacher argument. Please remove the teacher argument."
                )
        return optimizer_compile_args

    def _validate_compile_args(
        self, optimizer: Teleprompter, optimizer_key: str, compile_args: dict[str, Any]
    ) -> None:
        if "student" in compile_args:
            raise CallError(
                f"'student' is not allowed in optimizer_compile_args for optimizer "
                f"'{optimizer_key}'. The same student is used throughout compilation."
            )
        valid = inspect.signature(optimizer.compile).parameters
        invalid = set(compile_args) - set(valid)
        if invalid:
            raise CallError(
                f"Invalid compile arguments for optimizer '{optimizer_key}': {sorted(invalid)}. "
                f"{type(optimizer).__name__}.compile() accepts: {list(valid)}"
            )

    # ------------------------------------------------------------------ the run
    def _run_strategies(
        self,
        student: Any,
        trainset: list[Any],
        teacher: list[Any] | None,
        valset: list[Any] | None,
        num_threads: int | None,
        max_errors: int | None,
        provide_traceback: bool | None,
        seed: int | None,
        parsed_strategy: list[str],
        shuffle_trainset_between_steps: bool,
        optimizer_args: dict[str, dict[str, Any]],
    ) -> Any:
        rng = random.Random(seed)
        candidates: list[dict[str, Any]] = []
        error_occurred = False

        launch_lms(student)
        score = self._evaluate_on_valset(
            student, valset, rng, num_threads, max_errors, provide_traceback
        )
        self._add_candidate(candidates, student, strategy="", score=score)
        logger.info("BetterTogether: baseline score %s", score)

        for ind, step in enumerate(parsed_strategy):
            current = self.STRAT_SEP.join(parsed_strategy[: ind + 1])
            optimizer = self.optimizers[step]
            logger.info(
                "BetterTogether step %d/%d: %s (%r)",
                ind + 1,
                len(parsed_strategy),
                type(optimizer).__name__,
                current,
            )
            try:
                if shuffle_trainset_between_steps:
                    rng.shuffle(trainset)
                student, score = self._run_and_evaluate_step(
                    optimizer,
                    student,
                    teacher,
                    trainset,
                    valset,
                    optimizer_args.get(step, {}),
                    candidates,
                    current,
                    rng,
                    num_threads,
                    max_errors,
                    provide_traceback,
                )
                logger.info("BetterTogether: score after %r: %s", current, score)
            except Exception as exc:
                error_occurred = True
                logger.error(
                    "Step %d/%d failed with error: %s: %s. Stopping optimization early; "
                    "returning the best of %d candidate(s).",
                    ind + 1,
                    len(parsed_strategy),
                    type(exc).__name__,
                    exc,
                    len(candidates),
                    exc_info=True,
                )
                break

        kill_lms(student)

        # best first; an earlier program wins a tie
        ordered = sorted(
            enumerate(candidates),
            key=lambda ic: (
                ic[1]["score"] if ic[1]["score"] is not None else float("-inf"),
                -ic[0],
            ),
            reverse=True,
        )
        ranked = [c for _, c in ordered]
        best = ranked[0] if valset else candidates[-1]
        program = best["program"]
        program.candidate_programs = ranked
        program.flag_compilation_error_occurred = error_occurred
        return program

    def _run_and_evaluate_step(
        self,
        optimizer: Teleprompter,
        student: Any,
        teacher: list[Any] | None,
        trainset: list[Any],
        valset: list[Any] | None,
        compile_args: dict[str, Any],
        candidates: list[dict[str, Any]],
        current_strategy: str,
        rng: random.Random,
        num_threads: int | None,
        max_errors: int | None,
        provide_traceback: bool | None,
    ) -> tuple[Any, float | None]:
        lms_before = [pred.lm for pred in student.predictors()]
        student._compiled = False
        offered = {"trainset": trainset, "teacher": teacher, "valset": valset, **compile_args}
        accepted = inspect.signature(optimizer.compile).parameters
        student = optimizer.compile(student, **{k: v for k, v in offered.items() if k in accepted})

        if not all_predictors_have_lms(student):
            logger.warning(
                "%s reset predictor LMs; restoring the original LMs.", type(optimizer).__name__
            )
            for pred, lm in zip(student.predictors(), lms_before, strict=False):
                pred.lm = lm
        if self._models_changed(student, lms_before):
            launch_lms(student)

        score = self._evaluate_on_valset(
            student, valset, rng, num_threads, max_errors, provide_traceback
        )
        self._add_candidate(candidates, student, current_strategy, score)
        return student, score

    def _models_changed(self, student: Any, pred_lms_before: list[Any]) -> bool:
        """Whether the predictors' model names changed (a weight optimizer ran)."""
        after = [pred.lm for pred in student.predictors()]
        names = [getattr(lm, "model", None) if lm else None for lm in pred_lms_before]
        return names != [getattr(lm, "model", None) if lm else None for lm in after]

    def _add_candidate(
        self, candidate_programs: list[Any], student: Any, strategy: str, score: float | None
    ) -> None:
        candidate_programs.append(
            {"score": score, "program": student.deepcopy(), "strategy": strategy}
        )

    def _evaluate_on_valset(
        self,
        program: Any,
        valset: list[Any] | None,
        rng: random.Random,
        num_threads: int | None,
        max_errors: int | None,
        provide_traceback: bool | None,
    ) -> float | None:
        if not valset:
            return None
        from dspex.evaluate import Evaluate

        evaluate = Evaluate(
            devset=valset,
            metric=self.metric,
            num_threads=num_threads,
            max_errors=max_errors,
            display_table=False,
            display_progress=True,
            provide_traceback=provide_traceback,
        )
        result = eval_candidate_program(len(valset), valset, program, evaluate, rng)
        score: float | None = result.score
        return score
