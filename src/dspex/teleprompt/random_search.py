"""``BootstrapFewShotWithRandomSearch`` (``BootstrapRS``): several demo sets, keep the best.

The candidates are DSPy's, seed by seed: ``-3`` zero-shot, ``-2`` labeled demos only, ``-1``
bootstrapped in trainset order, then seeds ``0..num_candidate_programs-1`` bootstrapped on a
trainset shuffled with ``random.Random(seed)`` and ``randint(1, max_bootstrapped_demos)``
demos. Each is scored with :class:`~dspex.evaluate.Evaluate` on the valset; the first best
score wins (ties keep the earlier seed), as in DSPy.

``max_lm_calls``/``max_cost`` (DSPex only) stop before the next candidate once that many LM
calls were made / that many USD paid; the best candidate scored so far is returned
(``budget.calls``: LM calls per candidate; ``compiled.run_summary``: calls, tokens and cost per
candidate). ``run_dir`` checkpoints every scored candidate; a run started again with the same
directory (or with ``resume=`` that directory, which must then hold a run) scores only the
candidates not checkpointed yet.

DSPy builds and scores the candidates one after the other. Here, unless ``stop_at_score`` or
``max_lm_calls`` may end the search early or ``num_threads=1``, all candidates are built and scored at the same
time, sharing one limit of ``num_threads`` program runs, and the scores are then read in seed
order; the LM requests are the ones DSPy sends, so the winner and the candidate list are the
same.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from dspex import settings
from dspex._sync import run_sync
from dspex.errors import OptimizerError
from dspex.teleprompt.bootstrap import BootstrapFewShot, default_max_errors
from dspex.teleprompt.limits import Limited, default_threads
from dspex.teleprompt.run import PhaseProgress, Run, RunOptions
from dspex.teleprompt.teleprompt import Teleprompter
from dspex.teleprompt.vanilla import LabeledFewShot

__all__ = ["BootstrapFewShotWithRandomSearch"]

logger = logging.getLogger(__name__)

_FIRST_SEED = -3  # zero-shot, labeled-only and unshuffled bootstrap come before seed 0


class BootstrapFewShotWithRandomSearch(RunOptions, Teleprompter):
    """DSPy's random search over bootstrapped demo sets (same arguments and defaults)."""

    def __init__(
        self,
        metric: Callable[..., Any],
        teacher_settings: Mapping[str, Any] | None = None,
        max_bootstrapped_demos: int = 4,
        max_labeled_demos: int = 16,
        max_rounds: int = 1,
        num_candidate_programs: int = 16,
        num_threads: int | None = None,
        max_errors: int | None = None,
        stop_at_score: float | None = None,
        metric_threshold: float | None = None,
        *,
        max_lm_calls: int | None = None,
        max_cost: float | None = None,
        run_dir: str | os.PathLike[str] | None = None,
        display_progress: bool = True,
        resume: str | os.PathLike[str] | None = None,
    ) -> None:
        self._set_run_options(max_lm_calls, max_cost, run_dir, display_progress, resume)
        self.metric = metric
        self.teacher_settings: dict[str, Any] = dict(teacher_settings or {})
        self.max_rounds = max_rounds
        self.num_threads = num_threads
        self.stop_at_score = stop_at_score
        self.metric_threshold = metric_threshold
        self.min_num_samples = 1
        self.max_num_samples = max_bootstrapped_demos
        self.max_errors = max_errors
        self.num_candidate_sets = num_candidate_programs
        self.max_labeled_demos = max_labeled_demos
        logger.info(
            "Going to sample between %d and %d traces per predictor; "
            "will attempt to bootstrap %d candidate sets.",
            self.min_num_samples,
            self.max_num_samples,
            self.num_candidate_sets,
        )

    # ------------------------------------------------------------------ compile
    def compile(  # type: ignore[override]
        self,
        student: Any,
        *,
        teacher: Any = None,
        trainset: list[Any],
        valset: list[Any] | None = None,
        restrict: Iterable[int] | None = None,
        labeled_sample: bool = True,
    ) -> Any:
        return run_sync(
            self.acompile(
                student,
                teacher=teacher,
                trainset=trainset,
                valset=valset,
                restrict=restrict,
                labeled_sample=labeled_sample,
            )
        )

    async def acompile(
        self,
        student: Any,
        *,
        teacher: Any = None,
        trainset: list[Any],
        valset: list[Any] | None = None,
        restrict: Iterable[int] | None = None,
        labeled_sample: bool = True,
    ) -> Any:
        """``compile`` for async callers."""
        self.trainset = trainset
        self.valset = valset or trainset
        seeds = self._seeds(restrict)
        max_errors = self.max_errors if self.max_errors is not None else default_max_errors()
        run = self._open_run(
            "BootstrapFewShotWithRandomSearch",
            student,
            teacher=teacher,
            lm=settings.current().lm,
            trainset=list(trainset),
            valset=list(self.valset),
            seeds=seeds,
            labeled_sample=labeled_sample,
        )
        with run:
            self.budget.check_prices(settings.current().lm, self.teacher_settings.get("lm"))
            with run.progress("candidates", total=len(seeds)) as bar:
                best = await self._search(
                    student, teacher, labeled_sample, seeds, max_errors, run, bar
                )
        best.run_summary = run.summary
        return best

    def _args(self) -> dict[str, Any]:
        """The arguments a resumed run must share (budgets and concurrency may change)."""
        return {
            "metric": self.metric,
            "teacher_settings": self.teacher_settings,
            "max_rounds": self.max_rounds,
            "stop_at_score": self.stop_at_score,
            "metric_threshold": self.metric_threshold,
            "max_bootstrapped_demos": self.max_num_samples,
            "max_labeled_demos": self.max_labeled_demos,
            "max_errors": self.max_errors,
        }

    async def _candidate(
        self,
        run: Run,
        build: _Builder,
        seed: int,
        max_errors: int,
        limiter: asyncio.Semaphore | None,
        bar: PhaseProgress,
    ) -> tuple[Any, float, list[Any]]:
        """Build and score one candidate (or restore it from the run's checkpoint)."""
        key = f"candidate {seed}"
        saved = run.restore(key)
        if saved is not None:
            bar.advance()
            return build.restore(saved), saved["score"], saved["subscores"]
        with run.phase(key):
            program = await build(seed)
            target = program if limiter is None else Limited(program, limiter)
            result = await self._evaluator(max_errors).acall(target)
        score, subscores = result.score, [output[2] for output in result.results]
        run.checkpoint(
            key,
            {
                "seed": seed,
                "score": score,
                "subscores": subscores,
                "compiled": bool(getattr(program, "_compiled", False)),
                "state": program.dump_state(),
            },
        )
        bar.advance()
        return program, score, subscores

    async def _search(
        self,
        student: Any,
        teacher: Any,
        labeled_sample: bool,
        seeds: list[int],
        max_errors: int,
        run: Run,
        bar: PhaseProgress,
    ) -> Any:
        build = _Builder(self, student, teacher, labeled_sample, max_errors)
        early_stop = (
            self.stop_at_score is not None
            or self.budget.max_lm_calls is not None
            or self.budget.max_cost is not None
        )
        outcomes: list[tuple[Any, float, list[Any]]] = []
        if not early_stop and (self.num_threads or default_threads()) > 1:
            # No early stop: every candidate will be scored, so all are built and scored at
            # once, sharing num_threads program runs (num_threads=1 keeps DSPy's order).
            limiter = build.shared_limiter()
            outcomes = list(
                await asyncio.gather(
                    *(self._candidate(run, build, s, max_errors, limiter, bar) for s in seeds)
                )
            )

        scores: list[float] = []
        score_data: list[dict[str, Any]] = []
        best_program: Any = None
        for index, seed in enumerate(seeds):
            if best_program is not None and run.spent:
                logger.info(
                    "Stopping (%s): %d LM calls made, %.6f USD paid",
                    self.budget.stopped_by,
                    self.budget.total,
                    self.budget.cost,
                )
                break
            if outcomes:
                program, score, subscores = outcomes[index]
            else:
                program, score, subscores = await self._candidate(
                    run, build, seed, max_errors, None, bar
                )
            if not scores or score > max(scores):
                logger.info("New best score: %s for seed %s", score, seed)
                best_program = program
            scores.append(score)
            score_data.append(
                {"score": score, "subscores": subscores, "seed": seed, "program": program}
            )
            if self.stop_at_score is not None and score >= self.stop_at_score:
                logger.info(
                    "Stopping early: score %s >= stop_at_score %s", score, self.stop_at_score
                )
                break

        best_program.candidate_programs = sorted(score_data, key=lambda x: x["score"], reverse=True)
        logger.info("%d candidate programs found.", len(best_program.candidate_programs))
        return best_program

    def _seeds(self, restrict: Iterable[int] | None) -> list[int]:
        seeds = list(range(_FIRST_SEED, self.num_candidate_sets))
        if restrict is None:
            return seeds
        wanted = set(restrict)
        if not wanted.intersection(seeds):
            raise OptimizerError(
                f"`restrict` {wanted!r} does not match any candidate seed in "
                f"range(-3, {self.num_candidate_sets}); no candidate programs would be evaluated."
            )
        return [seed for seed in seeds if seed in wanted]

    def _evaluator(self, max_errors: int) -> Any:
        from dspex.evaluate import Evaluate

        return Evaluate(
            devset=self.valset,
            metric=self.metric,
            num_threads=self.num_threads,
            max_errors=max_errors,
            display_table=False,
            display_progress=False,
        )


class _Builder:
    """Builds the candidate program for one seed (DSPy's recipe per seed)."""

    def __init__(
        self,
        search: BootstrapFewShotWithRandomSearch,
        student: Any,
        teacher: Any,
        labeled_sample: bool,
        max_errors: int,
    ) -> None:
        self.search = search
        self.student = student
        self.teacher = teacher
        self.labeled_sample = labeled_sample
        self.max_errors = max_errors
        self.limiter: asyncio.Semaphore | None = None

    def restore(self, saved: dict[str, Any]) -> Any:
        """The candidate program a checkpoint holds."""
        program = self.student.reset_copy()
        program.load_state(saved["state"])
        if saved.get("compiled"):
            program._compiled = True
        return program

    def shared_limiter(self) -> asyncio.Semaphore:
        """One bound on program runs for every candidate built from now on."""
        self.limiter = asyncio.Semaphore(self.search.num_threads or default_threads())
        return self.limiter

    async def __call__(self, seed: int) -> Any:
        search = self.search
        trainset = list(search.trainset)
        if seed == -3:
            return self.student.reset_copy()
        if seed == -2:
            labeled = LabeledFewShot(k=search.max_labeled_demos)
            return labeled.compile(self.student, trainset=trainset, sample=self.labeled_sample)
        size = search.max_num_samples
        if seed >= 0:
            random.Random(seed).shuffle(trainset)
            size = random.Random(seed).randint(search.min_num_samples, search.max_num_samples)
        optimizer = BootstrapFewShot(
            metric=search.metric,
            metric_threshold=search.metric_threshold,
            max_bootstrapped_demos=size,
            max_labeled_demos=search.max_labeled_demos,
            teacher_settings=search.teacher_settings,
            max_rounds=search.max_rounds,
            max_errors=self.max_errors,
            num_threads=search.num_threads,
            display_progress=False,
        )
        optimizer._limiter = self.limiter
        optimizer._run_ahead = False  # the candidates' calls stay DSPy's
        return await optimizer.acompile(self.student, teacher=self.teacher, trainset=trainset)
