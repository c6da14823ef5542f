"""``MIPROv2``: instructions and demos chosen together by Bayesian optimization (optuna TPE).

DSPy 3.4.1's algorithm, arguments and defaults, on native programs in the user's process:

1. demo candidates: ``num_candidates`` demo sets per predictor, built as DSPy builds them
   (:func:`~dspex.teleprompt.mipro_utils.create_n_fewshot_demo_sets`, native BootstrapFewShot);
2. instruction candidates: the :class:`~dspex.propose.GroundedProposer` (dataset summary,
   program description, demos, random tips), with the original instruction first;
3. search: an optuna ``TPESampler(seed=seed, multivariate=True)`` picks one instruction and one
   demo set per predictor per trial; each trial is scored with native ``Evaluate`` on a
   minibatch of the valset (or the whole valset), with a full evaluation of the best averaging
   combination every ``minibatch_full_eval_steps`` trials.

Every draw from the seeded ``random.Random`` happens in DSPy's order and the trials run one
after the other, as they must (each depends on the scores before it), so with ``num_threads=1``
the LM requests are DSPy's, in DSPy's order. With more threads, the bootstraps of the demo
sets and the instruction proposals also run concurrently (their requests are the same set).

DSPex only: ``max_lm_calls``/``max_cost`` stop starting new demo sets, proposals and trials
once spent, and the best program scored so far is returned (the student unchanged when the
budget ran out before the search scored anything; ``run_summary.stopped`` names the budget); ``compiled.run_summary`` holds the LM calls, tokens and cost of each phase
(``bootstrap``, ``propose``, ``search``). ``run_dir`` checkpoints the demo sets, the proposed
instructions (with the state of the seeded ``random.Random`` after each) and every score of
the search; a run started again with the same directory (or with ``resume=`` that
directory, which must then hold a run) replays the search from the recorded
scores (the optuna sampler and the minibatch draws see what they saw before, so TPE continues
identically) and evaluates only what was not scored yet.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
from collections.abc import Callable
from typing import Any, Literal

from dspex import settings
from dspex._sync import run_sync
from dspex.errors import OptimizerError
from dspex.teleprompt.bootstrap import default_max_errors
from dspex.teleprompt.limits import Limited
from dspex.teleprompt.mipro_search import _Search, aoptimize_prompt_parameters, import_optuna
from dspex.teleprompt.mipro_utils import (
    acreate_n_fewshot_demo_sets,
    create_minibatch,
    demo_candidates_of,
    dump_demo_sets,
    load_demo_sets,
    start_n_fewshot_demo_sets,
)
from dspex.teleprompt.run import Run, RunOptions
from dspex.teleprompt.teleprompt import Teleprompter

__all__ = ["AUTO_RUN_SETTINGS", "MIPROv2"]

logger = logging.getLogger(__name__)

BOOTSTRAPPED_FEWSHOT_EXAMPLES_IN_CONTEXT = 3
LABELED_FEWSHOT_EXAMPLES_IN_CONTEXT = 0
MIN_MINIBATCH_SIZE = 50

AUTO_RUN_SETTINGS = {
    "light": {"n": 6, "val_size": 100},
    "medium": {"n": 12, "val_size": 300},
    "heavy": {"n": 18, "val_size": 1000},
}


class MIPROv2(RunOptions, Teleprompter):
    """DSPy's ``MIPROv2`` with the same arguments, defaults, prompts and search."""

    def __init__(
        self,
        metric: Callable[..., Any],
        prompt_model: Any | None = None,
        task_model: Any | None = None,
        teacher_settings: dict[str, Any] | None = None,
        max_bootstrapped_demos: int = 4,
        max_labeled_demos: int = 4,
        auto: Literal["light", "medium", "heavy"] | None = "light",
        num_candidates: int | None = None,
        num_threads: int | None = None,
        max_errors: int | None = None,
        seed: int = 9,
        init_temperature: float = 1.0,
        verbose: bool = False,
        track_stats: bool = True,
        log_dir: str | None = None,
        metric_threshold: float | None = None,
        *,
        max_lm_calls: int | None = None,
        max_cost: float | None = None,
        run_dir: str | os.PathLike[str] | None = None,
        display_progress: bool = True,
        resume: str | os.PathLike[str] | None = None,
    ) -> None:
        allowed = {None, "light", "medium", "heavy"}
        if auto not in allowed:
            raise ValueError(f"Invalid value for auto: {auto}. Must be one of {allowed}.")
        if num_threads is not None and num_threads < 1:
            raise OptimizerError(f"num_threads must be at least 1, got {num_threads!r}")
        self._set_run_options(max_lm_calls, max_cost, run_dir, display_progress, resume)
        self.auto = auto
        self.num_fewshot_candidates = num_candidates
        self.num_instruct_candidates = num_candidates
        self.num_candidates = num_candidates
        self.metric = metric
        self.init_temperature = init_temperature
        lm = settings.current().lm
        self.task_model = task_model if task_model else lm
        self.prompt_model = prompt_model if prompt_model else lm
        self.max_bootstrapped_demos = max_bootstrapped_demos
        self.max_labeled_demos = max_labeled_demos
        self.verbose = verbose
        self.track_stats = track_stats
        self.log_dir = log_dir
        self.teacher_settings = teacher_settings or {}
        self.prompt_model_total_calls = 0
        self.total_calls = 0
        self.num_threads = num_threads
        self.max_errors = max_errors
        self.metric_threshold = metric_threshold
        self.seed = seed
        self.rng: random.Random | None = None
        if not self.prompt_model or not self.task_model:
            raise ValueError(
                "Either provide both prompt_model and task_model or set a default LM through "
                "dspy.configure(lm=...)"
            )

    # ------------------------------------------------------------------ compile
    def compile(  # type: ignore[override]
        self,
        student: Any,
        *,
        trainset: list[Any],
        teacher: Any = None,
        valset: list[Any] | None = None,
        num_trials: int | None = None,
        max_bootstrapped_demos: int | None = None,
        max_labeled_demos: int | None = None,
        seed: int | None = None,
        minibatch: bool = True,
        minibatch_size: int = 35,
        minibatch_full_eval_steps: int = 5,
        program_aware_proposer: bool = True,
        data_aware_proposer: bool = True,
        view_data_batch_size: int = 10,
        tip_aware_proposer: bool = True,
        fewshot_aware_proposer: bool = True,
        requires_permission_to_run: bool | None = None,
        provide_traceback: bool | None = None,
    ) -> Any:
        if requires_permission_to_run is False:
            logger.warning(
                "'requires_permission_to_run' is deprecated and will be removed in a future version."
            )
        elif requires_permission_to_run is True:
            raise ValueError(
                "User confirmation is removed from MIPROv2. Please remove the "
                "'requires_permission_to_run' argument."
            )
        import_optuna()  # fail before any LM call when the optional dependency is missing
        max_errors = self.max_errors if self.max_errors is not None else default_max_errors()
        max_boot = (
            max_bootstrapped_demos
            if max_bootstrapped_demos is not None
            else self.max_bootstrapped_demos
        )
        max_labeled = max_labeled_demos if max_labeled_demos is not None else self.max_labeled_demos
        zeroshot = max_boot == 0 and max_labeled == 0
        self._check_trial_args(student, zeroshot, num_trials)

        seed = seed or self.seed
        self.rng = random.Random(seed)
        trainset, valset = self._set_and_validate_datasets(trainset, valset)
        num_trials, valset, minibatch, n_instruct, n_fewshot = self._set_hyperparams_from_run_mode(
            student,
            num_trials,
            minibatch,
            zeroshot,
            valset,
            self.num_instruct_candidates,
            self.num_fewshot_candidates,
        )
        if self.auto:
            self._print_auto_run_settings(num_trials, minibatch, valset, n_fewshot, n_instruct)
        if minibatch and minibatch_size > len(valset):
            raise ValueError(
                f"Minibatch size cannot exceed the size of the valset. Valset size: {len(valset)}."
            )

        from dspex.evaluate import Evaluate

        program = student.deepcopy()
        evaluate = Evaluate(
            devset=valset,
            metric=self.metric,
            num_threads=self.num_threads,
            max_errors=max_errors,
            display_table=False,
            display_progress=False,
            provide_traceback=provide_traceback,
        )
        run = self._open_run(
            "MIPROv2",
            student,
            teacher=teacher,
            task_model=self.task_model,
            prompt_model=self.prompt_model,
            trainset=list(trainset),
            valset=list(valset),
            compile={
                "num_trials": num_trials,
                "max_bootstrapped_demos": max_boot,
                "max_labeled_demos": max_labeled,
                "seed": seed,
                "minibatch": minibatch,
                "minibatch_size": minibatch_size,
                "minibatch_full_eval_steps": minibatch_full_eval_steps,
                "proposer": [
                    program_aware_proposer,
                    data_aware_proposer,
                    view_data_batch_size,
                    tip_aware_proposer,
                    fewshot_aware_proposer,
                ],
            },
        )
        with run:
            self.budget.check_prices(self.task_model, self.prompt_model)
            search = _Search(
                self,
                program,
                {},
                None,
                evaluate,
                valset,
                num_trials,
                minibatch,
                minibatch_size,
                minibatch_full_eval_steps,
                run,
            )
            best = run_sync(
                self._steps(
                    run,
                    search,
                    trainset,
                    teacher,
                    seed,
                    zeroshot=zeroshot,
                    bootstrap={
                        "num_fewshot_candidates": n_fewshot,
                        "max_bootstrapped_demos": max_boot,
                        "max_labeled_demos": max_labeled,
                        "max_errors": max_errors,
                        "metric_threshold": self.metric_threshold,
                    },
                    proposer={
                        "view_data_batch_size": view_data_batch_size,
                        "program_aware": program_aware_proposer,
                        "use_dataset_summary": data_aware_proposer,
                        "use_tip": tip_aware_proposer,
                        "use_task_demos": fewshot_aware_proposer,
                    },
                    num_instruct_candidates=n_instruct,
                )
            )
            if best is None:
                logger.warning(
                    "MIPROv2 stopped (%s) before the search scored a program: returning the "
                    "student unchanged",
                    run.summary.stopped,
                )
                best = student.deepcopy()
        best.run_summary = run.summary
        return best

    def _args(self) -> dict[str, Any]:
        """The arguments a resumed run must share (budgets, concurrency, logging may change)."""
        return {
            "metric": self.metric,
            "auto": self.auto,
            "num_candidates": self.num_candidates,
            "init_temperature": self.init_temperature,
            "teacher_settings": self.teacher_settings,
            "max_errors": self.max_errors,
            "metric_threshold": self.metric_threshold,
        }

    async def _steps(
        self,
        run: Run,
        search: _Search,
        trainset: list[Any],
        teacher: Any,
        seed: int,
        *,
        zeroshot: bool,
        bootstrap: dict[str, Any],
        proposer: dict[str, Any],
        num_instruct_candidates: int,
    ) -> Any:
        """Steps 1-3 on one loop. With ``num_threads > 1`` and no budget, steps 1 and 2 overlap
        (see :meth:`_overlapped`) with the default program's full evaluation (the search's
        first score), under one limit of ``num_threads`` program runs and proposals. The draws from ``self.rng`` are made in
        DSPy's order and every request is DSPy's; the results are used in DSPy's order."""
        program = search.program
        threads = self.num_threads or _default_threads()
        unlimited = self.budget.max_lm_calls is None and self.budget.max_cost is None
        limiter = asyncio.Semaphore(threads) if threads > 1 and unlimited else None
        grounded = self._proposer(program, trainset, proposer["view_data_batch_size"], proposer)
        started: list[asyncio.Future[Any]] = []
        default: asyncio.Future[float] | None = None
        try:
            if limiter is not None:
                with self.budget.in_phase("search"), settings.context(lm=self.task_model):
                    default = asyncio.ensure_future(
                        search.score_full("default", Limited(program, limiter))
                    )
                    started.append(default)
            fresh = run.peek("demo_sets") is None and run.peek("instructions") is None
            demo_candidates: dict[int, list[list[Any]]] | None
            if limiter is not None and fresh:
                demo_candidates, instruction_candidates = await self._overlapped(
                    run,
                    grounded,
                    program,
                    trainset,
                    teacher,
                    limiter,
                    started,
                    bootstrap=bootstrap,
                    proposer=proposer,
                    num_instruct_candidates=num_instruct_candidates,
                )
            else:
                grounding: asyncio.Future[None] | None = None
                with run.phase("bootstrap"):
                    if limiter is not None and run.peek("instructions") is None:
                        with self.budget.in_phase("propose"):
                            grounding = asyncio.ensure_future(
                                grounded.aground(
                                    program,
                                    trainset,
                                    proposer["view_data_batch_size"],
                                    limiter=limiter,
                                )
                            )
                            started.append(grounding)
                    demo_candidates = await self._demo_sets(
                        run, program, trainset, seed, teacher, limiter, **bootstrap
                    )
                if run.spent:
                    return None
                with run.phase("propose"):
                    instruction_candidates = await self._instructions(
                        run,
                        grounded,
                        grounding,
                        program,
                        trainset,
                        demo_candidates,
                        proposer["view_data_batch_size"],
                        num_instruct_candidates,
                        limiter,
                    )
            if zeroshot:
                demo_candidates = None
            if run.spent:
                return None
            with run.phase("search"), settings.context(lm=self.task_model):
                return await aoptimize_prompt_parameters(
                    self,
                    program,
                    instruction_candidates,
                    demo_candidates,
                    search.evaluate,
                    search.valset,
                    search.num_trials,
                    search.minibatch,
                    search.minibatch_size,
                    search.full_eval_steps,
                    seed,
                    run=run,
                    default_score=default,
                    search=search,
                )
        finally:
            pending = [task for task in started if not task.done()]
            for task in pending:
                task.cancel()
            await asyncio.gather(*started, return_exceptions=True)

    async def _overlapped(
        self,
        run: Run,
        grounded: Any,
        program: Any,
        trainset: list[Any],
        teacher: Any,
        limiter: asyncio.Semaphore,
        started: list[asyncio.Future[Any]],
        *,
        bootstrap: dict[str, Any],
        proposer: dict[str, Any],
        num_instruct_candidates: int,
    ) -> tuple[dict[int, list[list[Any]]], dict[int, list[str]]]:
        """Steps 1 and 2 at once (a fresh run with ``num_threads > 1``, no budget). Every draw
        is made first, in DSPy's order: the demo sets' recipes, then the proposals' tips and
        rollout ids. Then, under ``limiter``: the demo sets (each its own bootstrap), the
        grounding (program source, dataset summary), and each proposal as soon as the
        grounding and the demo sets its prompt shows are done (the zero-shot and labeled sets
        need no LM call, so most proposals run while the bootstraps do). The checkpoints hold
        what the sequential steps hold (with the state of ``self.rng`` after each step's
        draws)."""
        assert self.rng is not None
        labeled, boot = _set_sizes(
            bootstrap["max_bootstrapped_demos"], bootstrap["max_labeled_demos"]
        )
        with run.phase("bootstrap"):
            with self.budget.in_phase("propose"):
                grounding = asyncio.ensure_future(
                    grounded.aground(
                        program, trainset, proposer["view_data_batch_size"], limiter=limiter
                    )
                )
                started.append(grounding)
            logger.info("==> STEP 1: BOOTSTRAP FEWSHOT EXAMPLES <==")
            logger.info(
                "Bootstrapping N=%d sets of demonstrations...", bootstrap["num_fewshot_candidates"]
            )
            with settings.context(lm=self.task_model):
                sets = start_n_fewshot_demo_sets(
                    program,
                    bootstrap["num_fewshot_candidates"],
                    trainset,
                    labeled,
                    boot,
                    self.metric,
                    self.teacher_settings,
                    max_errors=bootstrap["max_errors"],
                    metric_threshold=bootstrap["metric_threshold"],
                    teacher=teacher,
                    rng=self.rng,
                    num_threads=self.num_threads,
                    limiter=limiter,
                )
            started.extend(sets)
            sets_rng = self.rng.getstate()
            logger.info("==> STEP 2: PROPOSE INSTRUCTION CANDIDATES <==")
            logger.info("Proposing N=%d instructions...", num_instruct_candidates)
            predictors = program.predictors()
            with self.budget.in_phase("propose"):
                draws = grounded.draw_proposals(
                    len(predictors), bool(predictors), len(sets), num_instruct_candidates
                )
                proposing = asyncio.ensure_future(
                    grounded.apropose_when_ready(program, draws, grounding, sets, {}, limiter)
                )
                started.append(proposing)
            instructions_rng = self.rng.getstate()
            demo_candidates = demo_candidates_of(program, list(await asyncio.gather(*sets)))
            run.checkpoint("demo_sets", {"sets": dump_demo_sets(demo_candidates), "rng": sets_rng})
        with run.phase("propose"):
            candidates: dict[int, list[str]] = await proposing
            _keep_instructions(run, program, candidates, instructions_rng)
        return demo_candidates, candidates

    async def _demo_sets(
        self,
        run: Run,
        program: Any,
        trainset: list[Any],
        seed: int,
        teacher: Any,
        limiter: asyncio.Semaphore | None,
        **kwargs: Any,
    ) -> dict[int, list[list[Any]]]:
        """Step 1, or its checkpoint (the demo sets and the state of ``self.rng`` after them).
        A set of demo sets cut short by the budget is not checkpointed."""
        assert self.rng is not None
        saved = run.restore("demo_sets")
        if saved is not None:
            self.rng.setstate(_rng_state(saved["rng"]))
            return load_demo_sets(saved["sets"])
        with settings.context(lm=self.task_model):
            sets = await self._bootstrap_fewshot_examples(
                program, trainset, seed, teacher, limiter=limiter, **kwargs
            )
        wanted = kwargs["num_fewshot_candidates"]
        if all(len(candidates) == wanted for candidates in sets.values()):
            run.checkpoint("demo_sets", {"sets": dump_demo_sets(sets), "rng": self.rng.getstate()})
        return sets

    async def _instructions(
        self,
        run: Run,
        proposer: Any,
        grounding: asyncio.Future[None] | None,
        program: Any,
        trainset: list[Any],
        demo_candidates: dict[int, list[list[Any]]] | None,
        view_data_batch_size: int,
        num_instruct_candidates: int,
        limiter: asyncio.Semaphore | None,
    ) -> dict[int, list[str]]:
        """Step 2, or its checkpoint (the candidates and the state of ``self.rng`` after them)."""
        assert self.rng is not None
        saved = run.restore("instructions")
        if saved is not None:
            self.rng.setstate(_rng_state(saved["rng"]))
            return {i: list(candidates) for i, candidates in enumerate(saved["candidates"])}
        logger.info("==> STEP 2: PROPOSE INSTRUCTION CANDIDATES <==")
        if grounding is not None:
            await grounding
        else:
            await proposer.aground(program, trainset, view_data_batch_size)
        logger.info("Proposing N=%d instructions...", num_instruct_candidates)
        candidates: dict[int, list[str]] = await proposer.apropose_instructions_for_program(
            trainset=trainset,
            program=program,
            demo_candidates=demo_candidates,
            N=num_instruct_candidates,
            trial_logs={},
            limiter=limiter,
        )
        kept = None if run.spent else run  # a proposal cut short is not kept
        _keep_instructions(kept, program, candidates, self.rng.getstate())
        return candidates

    async def acompile(self, student: Any, **kwargs: Any) -> Any:
        """``compile`` for async callers (run in a worker thread; the settings go with it)."""
        return await asyncio.to_thread(self.compile, student, **kwargs)

    # ------------------------------------------------------------------ settings
    def _check_trial_args(self, student: Any, zeroshot: bool, num_trials: int | None) -> None:
        if self.auto is None and self.num_candidates is not None and num_trials is None:
            suggested = self._set_num_trials_from_num_candidates(
                student, zeroshot, self.num_candidates
            )
            raise ValueError(
                f"If auto is None, num_trials must also be provided. Given "
                f"num_candidates={self.num_candidates}, we'd recommend setting num_trials to "
                f"~{suggested}."
            )
        if self.auto is None and (self.num_candidates is None or num_trials is None):
            raise ValueError("If auto is None, num_candidates must also be provided.")
        if self.auto is not None and (self.num_candidates is not None or num_trials is not None):
            raise ValueError(
                "If auto is not None, num_candidates and num_trials cannot be set, since they "
                "would be overridden by the auto settings. Please either set auto to None, or do "
                "not specify num_candidates and num_trials."
            )

    def _set_num_trials_from_num_candidates(
        self, program: Any, zeroshot_opt: bool, num_candidates: int
    ) -> int:
        num_vars = len(program.predictors()) * (1 if zeroshot_opt else 2)
        return int(max(2 * num_vars * math.log2(num_candidates), 1.5 * num_candidates))

    def _set_hyperparams_from_run_mode(
        self,
        program: Any,
        num_trials: int | None,
        minibatch: bool,
        zeroshot_opt: bool,
        valset: list[Any],
        num_instruct_candidates: int | None,
        num_fewshot_candidates: int | None,
    ) -> tuple[int, list[Any], bool, int, int]:
        if self.auto is None:
            if num_instruct_candidates is None or num_fewshot_candidates is None:
                raise ValueError("num_candidates must be provided when auto is None.")
            if num_trials is None:
                raise ValueError("If auto is None, num_trials must also be provided.")
            return num_trials, valset, minibatch, num_instruct_candidates, num_fewshot_candidates
        auto = AUTO_RUN_SETTINGS[self.auto]
        valset = create_minibatch(valset, batch_size=auto["val_size"], rng=self.rng)
        minibatch = len(valset) > MIN_MINIBATCH_SIZE
        n_instruct = auto["n"] if zeroshot_opt else int(auto["n"] * 0.5)
        trials = self._set_num_trials_from_num_candidates(program, zeroshot_opt, auto["n"])
        return trials, valset, minibatch, n_instruct, auto["n"]

    def _set_and_validate_datasets(
        self, trainset: list[Any], valset: list[Any] | None
    ) -> tuple[list[Any], list[Any]]:
        if not trainset:
            raise ValueError("Trainset cannot be empty.")
        if valset is None:
            if len(trainset) < 2:
                raise ValueError("Trainset must have at least 2 examples if no valset specified.")
            size = min(1000, max(1, int(len(trainset) * 0.80)))
            cutoff = len(trainset) - size
            return trainset[:cutoff], trainset[cutoff:]
        if len(valset) < 1:
            raise ValueError("Validation set must have at least 1 example.")
        return trainset, valset

    def _print_auto_run_settings(
        self,
        num_trials: int,
        minibatch: bool,
        valset: list[Any],
        num_fewshot_candidates: int,
        num_instruct_candidates: int,
    ) -> None:
        logger.info(
            "\nRUNNING WITH THE FOLLOWING %s AUTO RUN SETTINGS:\nnum_trials: %s\nminibatch: %s"
            "\nnum_fewshot_candidates: %s\nnum_instruct_candidates: %s\nvalset size: %s\n",
            (self.auto or "").upper(),
            num_trials,
            minibatch,
            num_fewshot_candidates,
            num_instruct_candidates,
            len(valset),
        )

    # ------------------------------------------------------------------ steps 1 and 2
    async def _bootstrap_fewshot_examples(
        self,
        program: Any,
        trainset: list[Any],
        seed: int,
        teacher: Any,
        *,
        limiter: asyncio.Semaphore | None,
        num_fewshot_candidates: int,
        max_bootstrapped_demos: int,
        max_labeled_demos: int,
        max_errors: int | None,
        metric_threshold: float | None,
    ) -> dict[int, list[list[Any]]]:
        logger.info("==> STEP 1: BOOTSTRAP FEWSHOT EXAMPLES <==")
        logger.info("Bootstrapping N=%d sets of demonstrations...", num_fewshot_candidates)
        labeled, boot = _set_sizes(max_bootstrapped_demos, max_labeled_demos)
        return await acreate_n_fewshot_demo_sets(
            student=program,
            num_candidate_sets=num_fewshot_candidates,
            trainset=trainset,
            max_labeled_demos=labeled,
            max_bootstrapped_demos=boot,
            metric=self.metric,
            max_errors=max_errors if max_errors is not None else default_max_errors(),
            teacher=teacher,
            teacher_settings=self.teacher_settings,
            seed=seed,
            metric_threshold=metric_threshold,
            rng=self.rng,
            num_threads=self.num_threads,
            budget=self.budget,
            limiter=limiter,
        )

    def _proposer(
        self, program: Any, trainset: list[Any], view_data_batch_size: int, flags: dict[str, Any]
    ) -> Any:
        """The grounded proposer of step 2, not grounded yet (see ``GroundedProposer.aground``)."""
        from dspex.propose import GroundedProposer

        proposer = GroundedProposer(
            program=program,
            trainset=trainset,
            prompt_model=self.prompt_model,
            view_data_batch_size=view_data_batch_size,
            program_aware=flags["program_aware"],
            use_dataset_summary=flags["use_dataset_summary"],
            use_task_demos=flags["use_task_demos"],
            num_demos_in_context=BOOTSTRAPPED_FEWSHOT_EXAMPLES_IN_CONTEXT,
            use_tip=flags["use_tip"],
            set_tip_randomly=flags["use_tip"],
            use_instruct_history=False,
            set_history_randomly=False,
            verbose=self.verbose,
            rng=self.rng,
            init_temperature=self.init_temperature,
            num_threads=self.num_threads or _default_threads(),
            ground=False,
        )
        return proposer


def _keep_instructions(
    run: Run | None, program: Any, candidates: dict[int, list[str]], rng_state: Any
) -> None:
    """Step 2's end: each predictor's first candidate is its current instruction (as DSPy),
    every candidate logged, and the candidates checkpointed in ``run`` with ``rng_state``
    (the state of the optimizer's rng after step 2's draws; ``run=None``: not kept)."""
    for i, predictor in enumerate(program.predictors()):
        candidates[i][0] = predictor.signature.instructions
        for j, instruction in enumerate(candidates[i]):
            logger.info("Predictor %d, instruction %d: %s", i, j, instruction)
    if run is not None:
        run.checkpoint(
            "instructions",
            {"candidates": [candidates[i] for i in range(len(candidates))], "rng": rng_state},
        )


def _set_sizes(max_bootstrapped_demos: int, max_labeled_demos: int) -> tuple[int, int]:
    """The (labeled, bootstrapped) demos per set step 1 builds: zero-shot optimization still
    bootstraps a few demos for the proposer, as DSPy does."""
    if max_bootstrapped_demos == 0 and max_labeled_demos == 0:
        return LABELED_FEWSHOT_EXAMPLES_IN_CONTEXT, BOOTSTRAPPED_FEWSHOT_EXAMPLES_IN_CONTEXT
    return max_labeled_demos, max_bootstrapped_demos


def _rng_state(saved: Any) -> tuple[Any, ...]:
    """``random.Random.getstate()`` as read back from JSON (lists where it had tuples)."""
    version, internal, gauss = saved
    return (version, tuple(internal), gauss)


def _default_threads() -> int:
    from dspex.teleprompt.limits import default_threads

    return default_threads()
