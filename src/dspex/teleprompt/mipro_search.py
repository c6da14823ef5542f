"""Step 3 of MIPROv2: the optuna TPE search over instruction and demo-set choices.

DSPy's search, trial for trial: the default program is fully evaluated and added to the study
as trial 1; each trial then picks ``{i}_predictor_instruction`` (and ``{i}_predictor_demos``)
with ``TPESampler(seed=seed, multivariate=True)``, scores the candidate on a minibatch drawn
from the shared ``rng`` (or the whole valset), and, with minibatching, every
``minibatch_full_eval_steps + 1`` trials (and at the end) fully evaluates the combination with
the best mean minibatch score and adds that result to the study.

With a run directory every score is checkpointed under its evaluation (``default``,
``trial N``, ``full N``). A resumed search runs again from the start with those scores served
instead of evaluations: the sampler is asked the same questions with the same history and the
minibatches are drawn from the same ``rng``, so it reaches the point of the kill in the same
state (optuna's study is rebuilt, not stored) and goes on as the killed run would have.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from dspex.errors import OptimizerError
from dspex.teleprompt.limits import Limited, default_threads
from dspex.teleprompt.mipro_utils import (
    create_minibatch,
    get_program_with_highest_avg_score,
    save_candidate_program,
)
from dspex.teleprompt.run import Run

__all__ = ["aoptimize_prompt_parameters", "import_optuna"]

logger = logging.getLogger(__name__)


def import_optuna() -> Any:
    """``optuna`` (the ``dspex[optimizers]`` extra), or a clear error without it."""
    try:
        import optuna
    except ModuleNotFoundError as exc:
        if exc.name == "optuna":
            raise OptimizerError(
                "MIPROv2 requires the optional dependency 'optuna'. "
                "Install it with `pip install dspex[optimizers]`."
            ) from exc
        raise
    return optuna


def param_distributions(
    instruction_candidates: dict[int, list[str]], demo_candidates: Any
) -> dict[str, Any]:
    optuna = import_optuna()
    categorical = optuna.distributions.CategoricalDistribution
    distributions: dict[str, Any] = {}
    for i in range(len(instruction_candidates)):
        distributions[f"{i}_predictor_instruction"] = categorical(
            range(len(instruction_candidates[i]))
        )
        if demo_candidates:
            distributions[f"{i}_predictor_demos"] = categorical(range(len(demo_candidates[i])))
    return distributions


@dataclass
class _Trial:
    """One prepared trial: its choices and the examples it is scored on."""

    trial: Any
    trial_num: int
    candidate: Any
    chosen: list[str]
    raw: dict[str, int]
    batch_size: int
    devset: list[Any]
    key: str


async def _scored(evaluate: Any, program: Any, devset: list[Any], key: str) -> float:
    """DSPy's ``eval_candidate_program`` on an already drawn devset: a failure scores 0.0."""
    try:
        result = await evaluate.acall(program, devset=devset, callback_metadata={"metric_key": key})
        return float(result.score)
    except Exception:
        logger.error("An exception occurred during evaluation", exc_info=True)
        return 0.0


class _Search:
    """The state of one search (DSPy keeps it in closure variables)."""

    def __init__(
        self,
        optimizer: Any,
        program: Any,
        instruction_candidates: dict[int, list[str]],
        demo_candidates: Any,
        evaluate: Any,
        valset: list[Any],
        num_trials: int,
        minibatch: bool,
        minibatch_size: int,
        minibatch_full_eval_steps: int,
        run: Run | None = None,
    ) -> None:
        self.opt = optimizer
        self.run = run
        saved = run.peek("search") if run is not None else None
        self.resumed = saved is not None
        """A resumed run's search checkpoint was found (counted as resumed when it starts)."""
        self.recorded: dict[str, float] = dict(saved["scores"]) if saved else {}
        """Scores of a run killed before (resume): served instead of evaluating again."""
        self.scores: dict[str, float] = {}
        """Every score of this search, by evaluation (``default``, ``trial N``, ``full N``)."""
        self.program = program
        self.instruction_candidates = instruction_candidates
        self.demo_candidates = demo_candidates
        self.evaluate = evaluate
        self.valset = valset
        self.num_trials = num_trials
        self.minibatch = minibatch
        self.minibatch_size = minibatch_size
        self.full_eval_steps = minibatch_full_eval_steps
        extra_full_eval = 1 if num_trials % minibatch_full_eval_steps != 0 else 0
        self.adjusted_num_trials = int(
            num_trials + num_trials // minibatch_full_eval_steps + 1 + extra_full_eval
            if minibatch
            else num_trials
        )
        self.trial_logs: dict[int, dict[str, Any]] = {}
        self.score_data: list[dict[str, Any]] = []
        self.param_score_dict: dict[str, list[tuple[float, Any, dict[str, int]]]] = defaultdict(
            list
        )
        self.fully_evaled_param_combos: dict[str, dict[str, Any]] = {}
        self.best_score = 0.0
        self.best_program: Any = None
        self.total_eval_calls = 0
        self.study: Any = None

    def replayed(self, key: str) -> float | None:
        """The score a resumed run recorded for evaluation ``key`` before it was killed."""
        score = self.recorded.get(key)
        if score is not None:
            self.scores[key] = score
        return score

    def record(self, key: str, score: float) -> float:
        """Keep ``score`` and checkpoint every score so far (with a run directory)."""
        self.scores[key] = score
        if self.run is not None:
            self.run.checkpoint("search", {"scores": self.scores})
        return score

    async def score_full(self, key: str, program: Any) -> float:
        """The program's score on the whole valset (DSPy's ``eval_candidate_program``)."""
        score = self.replayed(key)
        if score is None:
            score = self.record(
                key, await _scored(self.evaluate, program, self.valset, "eval_full")
            )
        return score

    async def evaluate_default(self, early: asyncio.Future[float] | None = None) -> float:
        """The default program's full evaluation and DSPy's bookkeeping of it; ``early``: the
        score of that evaluation started before (while the demo sets and instructions were
        built), awaited here."""
        logger.info(
            "== Trial 1 / %d - Full Evaluation of Default Program ==", self.adjusted_num_trials
        )
        score = await (early if early is not None else self.score_full("default", self.program))
        logger.info("Default program score: %s", score)
        self.trial_logs[1] = {
            "full_eval_program_path": save_candidate_program(self.program, self.opt.log_dir, -1),
            "full_eval_score": score,
            "total_eval_calls_so_far": len(self.valset),
            "full_eval_program": self.program.deepcopy(),
        }
        self.best_score = score
        self.best_program = self.program.deepcopy()
        self.total_eval_calls = len(self.valset)
        self.score_data = [{"score": score, "program": self.program.deepcopy(), "full_eval": True}]
        return score

    def _insert(
        self, candidate: Any, trial: Any, trial_num: int
    ) -> tuple[list[str], dict[str, int]]:
        chosen: list[str] = []
        raw: dict[str, int] = {}
        for i, predictor in enumerate(candidate.predictors()):
            idx = trial.suggest_categorical(
                f"{i}_predictor_instruction", range(len(self.instruction_candidates[i]))
            )
            predictor.signature = predictor.signature.with_instructions(
                self.instruction_candidates[i][idx]
            )
            self.trial_logs[trial_num][f"{i}_predictor_instruction"] = idx
            chosen.append(f"Predictor {i}: Instruction {idx}")
            raw[f"{i}_predictor_instruction"] = idx
            if self.demo_candidates:
                demos_idx = trial.suggest_categorical(
                    f"{i}_predictor_demos", range(len(self.demo_candidates[i]))
                )
                predictor.demos = self.demo_candidates[i][demos_idx]
                self.trial_logs[trial_num][f"{i}_predictor_demos"] = demos_idx
                chosen.append(f"Predictor {i}: Few-Shot Set {demos_idx}")
                raw[f"{i}_predictor_demos"] = demos_idx
        return chosen, raw

    def prepare(self, trial: Any) -> _Trial:
        """Choose the trial's instructions and demos and draw its minibatch (no LM call)."""
        trial_num = trial.number + 1
        logger.info("== Trial %d / %d ==", trial_num, self.adjusted_num_trials)
        self.trial_logs[trial_num] = {}
        candidate = self.program.deepcopy()
        chosen, raw = self._insert(candidate, trial, trial_num)
        batch_size = self.minibatch_size if self.minibatch else len(self.valset)
        if batch_size >= len(self.valset):
            devset, key = self.valset, "eval_full"
        else:
            devset, key = create_minibatch(self.valset, batch_size, self.opt.rng), "eval_minibatch"
        return _Trial(trial, trial_num, candidate, chosen, raw, batch_size, devset, key)

    async def finish(self, t: _Trial, score: float) -> None:
        """Record a scored trial (DSPy's bookkeeping) and run a due full evaluation."""
        self.total_eval_calls += t.batch_size
        if not self.minibatch and score > self.best_score:
            self.best_score = score
            self.best_program = t.candidate.deepcopy()
            logger.info("Best full score so far! Score: %s", score)
        self.score_data.append(
            {"score": score, "program": t.candidate, "full_eval": t.batch_size >= len(self.valset)}
        )
        log = self.trial_logs[t.trial_num]
        prefix = "mb" if self.minibatch else "full_eval"
        log[f"{prefix}_program_path"] = save_candidate_program(
            t.candidate, self.opt.log_dir, t.trial_num
        )
        log[f"{prefix}_score"] = score
        log["total_eval_calls_so_far"] = self.total_eval_calls
        log[f"{prefix}_program"] = t.candidate.deepcopy()
        logger.info("Score: %s with parameters %s.", score, t.chosen)
        self.param_score_dict[",".join(t.chosen)].append((score, t.candidate, t.raw))
        if self.full_eval_due(t.trial_num):
            await self.full_evaluation(t.trial_num)

    def full_eval_due(self, trial_num: int) -> bool:
        return self.minibatch and (
            trial_num % (self.full_eval_steps + 1) == 0 or trial_num == self.adjusted_num_trials - 1
        )

    async def objective(self, trial: Any) -> float:
        """DSPy's objective: score one trial, then its bookkeeping (and a due full evaluation)."""
        t = self.prepare(trial)
        key = f"trial {t.trial_num}"
        score = self.replayed(key)
        if score is None:
            score = self.record(key, await _scored(self.evaluate, t.candidate, t.devset, t.key))
        await self.finish(t, score)
        return score

    async def run_ahead(self, count: int, threads: int) -> list[tuple[_Trial, float]]:
        """The first ``count`` trials at once: asked and prepared in order (the sampler's and
        the minibatch generator's draws in DSPy's order) and evaluated concurrently under one
        limit of ``threads`` program runs. The caller tells them to the study in order."""
        logger.info("Scoring the first %d trials at once (the sampler's random startup)", count)
        trials = [self.prepare(self.study.ask()) for _ in range(count)]
        limiter = asyncio.Semaphore(threads)

        async def score(t: _Trial) -> float:
            key = f"trial {t.trial_num}"
            replayed = self.replayed(key)
            if replayed is not None:
                return replayed
            try:
                result = await self.evaluate.acall(
                    Limited(t.candidate, limiter),
                    devset=t.devset,
                    callback_metadata={"metric_key": t.key},
                )
                return self.record(key, float(result.score))
            except Exception:
                logger.error("An exception occurred during evaluation", exc_info=True)
                return self.record(key, 0.0)

        scores = await asyncio.gather(*(score(t) for t in trials))
        return list(zip(trials, scores, strict=True))

    def ahead_count(self, n_startup_trials: int) -> int:
        """How many leading trials are sampled at random whatever the scores (the sampler's
        startup trials), up to the first one followed by a full evaluation."""
        count = 0
        for k in range(1, self.num_trials + 1):
            if 1 + (k - 1) >= n_startup_trials:  # the default trial counts as completed
                break
            count = k
            if self.full_eval_due(k + 1):
                break
        return count

    async def full_evaluation(self, trial_num: int) -> None:
        optuna = import_optuna()
        logger.info(
            "===== Trial %d / %d - Full Evaluation =====", trial_num + 1, self.adjusted_num_trials
        )
        program, mean, key, params = get_program_with_highest_avg_score(
            self.param_score_dict, self.fully_evaled_param_combos
        )
        logger.info("Doing full eval on next top averaging program (Avg Score: %s)", mean)
        score = await self.score_full(f"full {trial_num + 1}", program)
        self.score_data.append({"score": score, "program": program, "full_eval": True})
        self.study.add_trial(
            optuna.trial.create_trial(
                params=params,
                distributions=param_distributions(
                    self.instruction_candidates, self.demo_candidates
                ),
                value=score,
            )
        )
        self.fully_evaled_param_combos[key] = {"program": program, "score": score}
        self.total_eval_calls += len(self.valset)
        self.trial_logs[trial_num + 1] = {
            "total_eval_calls_so_far": self.total_eval_calls,
            "full_eval_program_path": save_candidate_program(
                program=program, log_dir=self.opt.log_dir, trial_num=trial_num + 1, note="full_eval"
            ),
            "full_eval_program": program,
            "full_eval_score": score,
        }
        if score > self.best_score:
            logger.info("New best full eval score! Score: %s", score)
            self.best_score = score
            self.best_program = program.deepcopy()


async def aoptimize_prompt_parameters(
    optimizer: Any,
    program: Any,
    instruction_candidates: dict[int, list[str]],
    demo_candidates: Any,
    evaluate: Any,
    valset: list[Any],
    num_trials: int,
    minibatch: bool,
    minibatch_size: int,
    minibatch_full_eval_steps: int,
    seed: int,
    *,
    run: Run | None = None,
    default_score: asyncio.Future[float] | None = None,
    search: _Search | None = None,
) -> Any:
    """MIPROv2's search (DSPy's ``_optimize_prompt_parameters``) on the caller's loop: every evaluation of the search
    runs on that one loop (its worker threads and connections are reused from trial to
    trial). Optuna's ``study.optimize`` loop is replaced by its equivalent ``ask``/``tell``
    loop (the same trials, the same sampler calls). ``default_score``/``search``: the default
    program's evaluation already started on ``search`` (``search.score_full("default", ...)``)."""
    optuna = import_optuna()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logger.info("==> STEP 3: FINDING OPTIMAL PROMPT PARAMETERS <==")
    if search is None:
        search = _Search(
            optimizer,
            program,
            instruction_candidates,
            demo_candidates,
            evaluate,
            valset,
            num_trials,
            minibatch,
            minibatch_size,
            minibatch_full_eval_steps,
            run,
        )
    else:
        search.instruction_candidates = instruction_candidates
        search.demo_candidates = demo_candidates
    if run is not None and search.resumed:
        run.resumed.append("search")
    score = await search.evaluate_default(default_score)
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed, multivariate=True),
    )
    search.study = study
    defaults = {f"{i}_predictor_instruction": 0 for i in range(len(program.predictors()))}
    if demo_candidates:
        defaults.update({f"{i}_predictor_demos": 0 for i in range(len(program.predictors()))})
    study.add_trial(
        optuna.trial.create_trial(
            params=defaults,
            distributions=param_distributions(instruction_candidates, demo_candidates),
            value=score,
        )
    )
    budget = optimizer.budget

    def spent() -> bool:
        return run.spent if run is not None else budget.spent

    remaining = num_trials
    threads = optimizer.num_threads or default_threads()
    sampler = study.sampler
    ahead = 0
    unlimited = budget.max_lm_calls is None and budget.max_cost is None
    if threads > 1 and unlimited and type(sampler).__name__ == "TPESampler":
        ahead = search.ahead_count(sampler._n_startup_trials)
    if ahead > 1:
        # DSPex only: trials the sampler draws at random run at once (same draws, same order)
        for t, value in await search.run_ahead(ahead, threads):
            await search.finish(t, value)  # as in DSPy's objective: bookkeeping, then tell
            study.tell(t.trial, value)
        remaining -= ahead
    for _ in range(remaining):
        if spent():
            logger.warning(
                "Stopping the search (%s): %d LM calls made, %.6f USD paid",
                budget.stopped_by,
                budget.total,
                budget.cost,
            )
            break
        trial = study.ask()
        try:
            value = await search.objective(trial)
        except BaseException:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        study.tell(trial, value)

    best = search.best_program
    if best is not None and optimizer.track_stats:
        best.trial_logs = search.trial_logs
        best.score = search.best_score
        best.prompt_model_total_calls = optimizer.prompt_model_total_calls
        best.total_calls = optimizer.total_calls
        ranked = sorted(search.score_data, key=lambda x: x["score"], reverse=True)
        best.mb_candidate_programs = [s for s in ranked if not s["full_eval"]]
        best.candidate_programs = [s for s in ranked if s["full_eval"]]
    logger.info("Returning best identified program with score %s!", search.best_score)
    return best
