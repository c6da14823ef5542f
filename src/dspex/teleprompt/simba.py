"""``SIMBA``: stochastic introspective mini-batch ascent (DSPy 3.4.1's algorithm and prompts).

Each of ``max_steps`` steps takes the next mini-batch of ``bsize`` training examples and:

1. runs ``num_candidates`` trajectories per example, each with a program drawn by softmax
   over the best programs so far (the baseline always among them) on its own LM copy
   (temperature 1.0, its own ``rollout_id``);
2. sorts the examples into buckets by how much their trajectories' scores differ;
3. for the top buckets, copies a program drawn by softmax, drops a Poisson number of its
   demos, and applies a strategy (:func:`~dspex.teleprompt.simba_utils.append_a_demo` or
   :data:`~dspex.teleprompt.simba_utils.append_a_rule`) until ``num_candidates + 1``
   candidates exist;
4. scores the candidates on the mini-batch and adds them to the pool.

Finally up to ``num_candidates + 1`` of the steps' winners are scored on the whole trainset
and the best is returned, with ``candidate_programs`` and ``trial_logs`` attached.

The random draws are DSPy's, in DSPy's order (``random.Random(seed)`` and
``numpy.random.default_rng(seed)``), so the same seed builds the same candidates. Program
runs go through one limit of ``num_threads`` concurrent runs on one event loop; the rule
requests of one step also run concurrently (DSPy asks for them one after the other): their
random draws are all made first in DSPy's order, and a failed strategy only means the next
buckets are drawn, as DSPy would. Each candidate is scored on the mini-batch as soon as its
strategy is done (DSPy waits for all strategies), and, without budgets, each winner the final
selection is sure to score (whatever the remaining steps add) is scored on the trainset as
it comes, in slots the steps leave idle: the same requests as DSPy's, sent earlier.
``num_threads=1`` sends the LM requests in DSPy's order.

DSPex only: ``max_lm_calls``/``max_cost`` stop the run once spent. Runs already started
finish; a step (or the final scoring) cut short is dropped, and the best program is picked
from what was completed (by mini-batch score if the final scoring was cut short);
``run_summary.stopped`` names the budget. ``compiled.run_summary`` holds the LM calls, tokens
and cost per phase (``step N: trajectories|strategies|candidates``, ``validation``).
``run_dir`` checkpoints the state after every step (both RNGs, the data order, the pool of
programs and their scores, the winners); a run started again with the same directory goes
on from the step after the last checkpoint.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, TypeVar

from dspex import settings
from dspex._sync import run_sync
from dspex.errors import ConfigurationError, OptimizerError
from dspex.teleprompt.bootstrap import fork_program
from dspex.teleprompt.limits import default_threads
from dspex.teleprompt.run import (
    Run,
    RunOptions,
    dump_program,
    load_program,
    numpy_rng_state,
    restore_numpy_rng,
)
from dspex.teleprompt.simba_utils import (
    Strategy,
    WrappedProgram,
    append_a_demo,
    append_a_rule,
    prepare_models_for_resampling,
    wrap_program,
)
from dspex.teleprompt.teleprompt import Teleprompter

__all__ = ["SIMBA"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


def _numpy() -> Any:
    try:
        import numpy
    except ImportError as exc:  # pragma: no cover - numpy ships with the optimizers extra
        raise ConfigurationError(
            "SIMBA needs numpy (the same random draws as DSPy): pip install 'dspex[optimizers]'"
        ) from exc
    return numpy


class _Spent(Exception):
    """A budget was spent before a unit of work could start."""


class _Slots:
    """At most ``n`` holders. A freed slot goes to the oldest waiting step job, else to the
    oldest background job, so background work only fills slots the steps leave idle."""

    def __init__(self, n: int) -> None:
        self.free = n
        self.waiters: tuple[deque[asyncio.Future[None]], deque[asyncio.Future[None]]] = (
            deque(),
            deque(),
        )

    async def acquire(self, background: bool) -> None:
        if self.free > 0:  # nobody waits while a slot is free
            self.free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self.waiters[background]
        queue.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot was handed over as we were cancelled
            else:
                queue.remove(waiter)
            raise

    def release(self) -> None:
        for queue in self.waiters:
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    return
        self.free += 1


class _Runner:
    """Runs jobs under one limit of concurrent jobs, in order when the limit is 1; refuses
    to start a job once a budget is spent."""

    def __init__(self, threads: int, spent: Callable[[], bool]) -> None:
        self.threads = threads
        self.spent = spent
        self.slots = _Slots(threads)
        # sync programs run in threads: as many as runs may overlap (asyncio's default
        # executor has only min(32, cpus + 4) threads)
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="dspex-simba")

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def _one(self, job: Callable[[], Awaitable[T]], background: bool) -> T:
        await self.slots.acquire(background)
        try:
            if self.spent():
                raise _Spent
            return await job()
        finally:
            self.slots.release()

    async def run(
        self, jobs: Sequence[Callable[[], Awaitable[T]]], background: bool = False
    ) -> list[T | Exception]:
        """Each job's result or exception, in order; ``_Spent`` if any job was refused.
        ``background`` jobs get a slot only when no step job is waiting for one."""
        results: list[T | Exception] = []
        if self.threads == 1:
            for job in jobs:
                try:
                    results.append(await self._one(job, background))
                except _Spent:
                    raise
                except Exception as exc:
                    results.append(exc)
            return results
        gathered = await asyncio.gather(
            *(self._one(job, background) for job in jobs), return_exceptions=True
        )
        for item in gathered:
            if isinstance(item, _Spent):
                raise item
            if isinstance(item, BaseException) and not isinstance(item, Exception):
                raise item
            results.append(item)
        return results

    async def run_programs(
        self, pairs: list[tuple[Any, Any]], background: bool = False
    ) -> list[dict[str, Any]]:
        """Wrapped programs on their examples (they never raise: errors score 0)."""
        jobs = [_bind(wrapped, example, self.executor) for wrapped, example in pairs]
        return await self.run_all(jobs, background)

    async def run_all(
        self, jobs: Sequence[Callable[[], Awaitable[T]]], background: bool = False
    ) -> list[T]:
        """``run`` for jobs that never fail: their results (an exception is raised)."""
        outputs = await self.run(jobs, background)
        for item in outputs:
            if isinstance(item, Exception):
                raise item
        return outputs  # type: ignore[return-value]

    async def scores(
        self, program: Any, metric: Callable[..., Any], examples: list[Any], background: bool
    ) -> list[Any]:
        """``program``'s metric score on each example."""
        outputs = await self.run_programs(
            [(wrap_program(program, metric), example) for example in examples], background
        )
        return [out["score"] for out in outputs]


def _bind(
    wrapped: WrappedProgram, example: Any, executor: Executor
) -> Callable[[], Awaitable[dict[str, Any]]]:
    return lambda: wrapped.acall(example, executor)


class _Pool:
    """The programs found so far and their mini-batch scores (DSPy's helpers)."""

    def __init__(self, np: Any) -> None:
        self.np = np
        self.programs: list[Any] = []
        self.scores: dict[int, list[Any]] = {}
        self.next_idx = 0

    def average(self, idx: int) -> float:
        scores = self.scores.get(idx, [])
        if not scores:
            return 0.0
        return float(sum(scores) / len(scores))

    def top_k_plus_baseline(self, k: int) -> list[int]:
        ranked = sorted(self.programs, key=lambda p: self.average(p.simba_idx), reverse=True)
        top = [p.simba_idx for p in ranked[:k]]
        if 0 not in top and top:
            top[-1] = 0
        return list(dict.fromkeys(top))

    def softmax_sample(self, rng: random.Random, idxs: list[int], temperature: float) -> int:
        if not idxs:
            raise OptimizerError("No programs available for softmax sampling.")
        exps = [self.np.exp(self.average(idx) / temperature) for idx in idxs]
        total = sum(exps)
        if total <= 0:
            return rng.choice(idxs)
        return rng.choices(idxs, weights=[value / total for value in exps], k=1)[0]

    def register(self, program: Any, scores: list[Any]) -> None:
        self.next_idx += 1
        program.simba_idx = self.next_idx
        self.programs.append(program)
        self.scores[self.next_idx] = scores


class SIMBA(RunOptions, Teleprompter):
    """DSPy's ``SIMBA`` with the same arguments, defaults, random draws and prompts."""

    def __init__(
        self,
        *,
        metric: Callable[..., Any],
        bsize: int = 32,
        num_candidates: int = 6,
        max_steps: int = 8,
        max_demos: int = 4,
        prompt_model: Any = None,
        teacher_settings: dict[str, Any] | None = None,
        demo_input_field_maxlen: int = 100_000,
        num_threads: int | None = None,
        temperature_for_sampling: float = 0.2,
        temperature_for_candidates: float = 0.2,
        max_lm_calls: int | None = None,
        max_cost: float | None = None,
        run_dir: str | os.PathLike[str] | None = None,
        display_progress: bool = True,
        resume: str | os.PathLike[str] | None = None,
    ) -> None:
        if num_threads is not None and num_threads < 1:
            raise OptimizerError(f"num_threads must be at least 1, got {num_threads!r}")
        self._set_run_options(max_lm_calls, max_cost, run_dir, display_progress, resume)
        self.metric = metric
        self.bsize = bsize
        self.num_candidates = num_candidates
        self.max_steps = max_steps
        self.max_demos = max_demos
        self.prompt_model = prompt_model or settings.current().lm
        self.teacher_settings = teacher_settings
        self.demo_input_field_maxlen = demo_input_field_maxlen
        self.num_threads = num_threads
        self.temperature_for_sampling = temperature_for_sampling
        self.temperature_for_candidates = temperature_for_candidates
        self.strategies: list[Strategy] = (
            [append_a_demo(demo_input_field_maxlen), append_a_rule]
            if max_demos > 0
            else [append_a_rule]
        )

    # ------------------------------------------------------------------ compile
    def compile(self, student: Any, *, trainset: list[Any], seed: int = 0) -> Any:  # type: ignore[override]
        return run_sync(self.acompile(student, trainset=trainset, seed=seed))

    async def acompile(self, student: Any, *, trainset: list[Any], seed: int = 0) -> Any:
        """``compile`` for async callers."""
        if len(trainset) < self.bsize:
            raise OptimizerError(f"Trainset too small: {len(trainset)} < {self.bsize}")
        run = self._open_run(
            "SIMBA",
            student,
            lm=settings.current().lm,
            trainset=list(trainset),
            seed=seed,
        )
        simba = _Run(self, trainset, seed, run)
        try:
            with run:
                self.budget.check_prices(settings.current().lm, self.prompt_model)
                best = await simba.run(student)
        finally:
            simba.runner.close()
        best.run_summary = run.summary
        return best

    def _args(self) -> dict[str, Any]:
        """The arguments a resumed run must share (budgets and concurrency may change)."""
        return {
            "metric": self.metric,
            "bsize": self.bsize,
            "num_candidates": self.num_candidates,
            "max_steps": self.max_steps,
            "max_demos": self.max_demos,
            "prompt_model": self.prompt_model,
            "teacher_settings": self.teacher_settings,
            "demo_input_field_maxlen": self.demo_input_field_maxlen,
            "temperature_for_sampling": self.temperature_for_sampling,
            "temperature_for_candidates": self.temperature_for_candidates,
        }


class _Run:
    """One compile: the RNGs, the pool and the step loop."""

    def __init__(self, simba: SIMBA, trainset: list[Any], seed: int, run: Run) -> None:
        self.o = simba
        self.run_ = run
        self.trainset = trainset
        np = _numpy()
        self.np = np
        self.rng = random.Random(seed)
        self.rng_np = np.random.default_rng(seed)
        self.pool = _Pool(np)
        self.runner = _Runner(simba.num_threads or default_threads(), lambda: run.spent)
        self.trial_logs: dict[int, dict[str, Any]] = {}
        # concurrent runs: a candidate is scored as soon as its strategy is done, and the
        # winners the final selection is sure to score are scored in idle slots as they come
        # (only without budgets, whose cut-short rules depend on DSPy's order of work)
        self.overlap = self.runner.threads > 1
        budget = simba.budget
        self.early_scoring = (
            self.overlap
            and simba.num_candidates >= 1
            and budget.max_lm_calls is None
            and budget.max_cost is None
        )
        self.early: dict[int, tuple[Any, asyncio.Task[list[Any]]]] = {}

    async def run(self, student: Any) -> Any:
        try:
            return await self._run(student)
        finally:
            await _cancel([task for _, task in self.early.values()])

    async def _run(self, student: Any) -> Any:
        o = self.o
        student = student.deepcopy()
        student.simba_idx = 0
        self.pool.programs.append(student)
        self.pool.scores[0] = []
        winners: list[Any] = [student]
        winner_scores: list[float] = [0.0]

        data_indices = list(range(len(self.trainset)))
        self.rng.shuffle(data_indices)
        instance_idx = 0
        first = 0
        saved = self.run_.restore("simba")
        if saved is not None:
            first, instance_idx, data_indices = self._restore(saved, student, winners)
            winner_scores = list(saved["winner_scores"])
        self._score_early(winners, o.max_steps - first)
        with self.run_.progress("SIMBA steps", total=o.max_steps) as bar:
            bar.advance(first)
            for step in range(first, o.max_steps):
                if self.run_.spent:
                    self._stopping(f"before step {step + 1}")
                    break
                logger.info("Starting batch %d of %d.", step + 1, o.max_steps)
                if instance_idx + o.bsize > len(self.trainset):
                    self.rng.shuffle(data_indices)
                    instance_idx = 0
                batch = [
                    self.trainset[i] for i in data_indices[instance_idx : instance_idx + o.bsize]
                ]
                instance_idx += o.bsize
                self.trial_logs[step] = {}
                try:
                    won = await self._step(step, batch)
                except _Spent:
                    del self.trial_logs[step]
                    self._stopping(f"in step {step + 1} (the step is dropped)")
                    break
                if won is not None:
                    winners.append(won[0])
                    winner_scores.append(won[1])
                self._score_early(winners, o.max_steps - step - 1)
                bar.advance()
                self._checkpoint(step + 1, instance_idx, data_indices, winners, winner_scores)
        return await self._finish(winners, winner_scores)

    def _stopping(self, where: str) -> None:
        budget = self.o.budget
        logger.warning(
            "SIMBA stopped %s: %s spent (%d LM calls, %.6f USD)",
            where,
            budget.stopped_by,
            budget.total,
            budget.cost,
        )

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint(
        self,
        next_step: int,
        instance_idx: int,
        data_indices: list[int],
        winners: list[Any],
        winner_scores: list[float],
    ) -> None:
        """The state after a finished step (nothing is written without a run directory)."""
        if self.run_.dir is None:
            return

        def program(p: Any) -> dict[str, Any]:
            return {"program": dump_program(p), "simba_idx": p.simba_idx}

        pool = self.pool
        self.run_.checkpoint(
            "simba",
            {
                "next_step": next_step,
                "instance_idx": instance_idx,
                "data_indices": data_indices,
                "rng": self.rng.getstate(),
                "rng_np": numpy_rng_state(self.rng_np),
                "programs": [program(p) for p in pool.programs],
                "scores": [[idx, scores] for idx, scores in pool.scores.items()],
                "next_idx": pool.next_idx,
                "winners": [program(p) for p in winners[1:]],
                "winner_scores": winner_scores,
                "trial_logs": [[step, log] for step, log in self.trial_logs.items()],
            },
        )

    def _restore(
        self, saved: dict[str, Any], student: Any, winners: list[Any]
    ) -> tuple[int, int, list[int]]:
        """Rebuild the state a checkpoint holds (``winners`` is extended in place)."""

        def program(entry: dict[str, Any]) -> Any:
            p = load_program(student, entry["program"])
            p.simba_idx = entry["simba_idx"]
            return p

        version, internal, gauss = saved["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        restore_numpy_rng(self.rng_np, saved["rng_np"])
        pool = self.pool
        pool.programs = [student, *(program(e) for e in saved["programs"][1:])]
        pool.scores = {int(idx): list(scores) for idx, scores in saved["scores"]}
        pool.next_idx = saved["next_idx"]
        winners.extend(program(e) for e in saved["winners"])
        self.trial_logs = {int(step): dict(log) for step, log in saved["trial_logs"]}
        return saved["next_step"], saved["instance_idx"], list(saved["data_indices"])

    # ------------------------------------------------------------------ one step
    async def _step(self, step: int, batch: list[Any]) -> tuple[Any, float] | None:
        o, pool = self.o, self.pool
        o.budget.phase = f"step {step + 1}: trajectories"
        models = prepare_models_for_resampling(
            pool.programs[0], o.num_candidates, o.teacher_settings
        )
        top = pool.top_k_plus_baseline(o.num_candidates)
        jobs: list[Callable[[], Awaitable[dict[str, Any]]]] = []
        predictor2name: dict[int, str] = {}
        for model in models:
            for example in batch:
                chosen = pool.softmax_sample(self.rng, top, o.temperature_for_sampling)
                jobs.append(self._trajectory(pool.programs[chosen], model, example, predictor2name))
        logger.info(
            "Sampling program trajectories on %d examples x %d samples.", o.bsize, o.num_candidates
        )
        outputs = await self.runner.run_all(jobs)

        buckets = self._buckets(outputs, len(batch))
        scores = [float(out["score"]) for out in outputs]
        p10 = self.np.percentile(scores, 10)
        p90 = self.np.percentile(scores, 90)
        baseline = sum(out["score"] for out in outputs) / len(outputs)
        logger.info("Batch %d: Baseline mini-batch score: %s", step + 1, baseline)

        o.budget.phase = f"step {step + 1}: strategies"
        context = {
            "predictor2name": predictor2name,
            "batch_10p_score": p10,
            "batch_90p_score": p90,
            "prompt_model": o.prompt_model,
        }
        scoring: list[asyncio.Task[list[Any]]] = []
        try:
            candidates = await self._candidates(step, buckets, context, batch, scoring)
            o.budget.phase = f"step {step + 1}: candidates"
            logger.info(
                "Batch %d: Evaluating %d programs on %d examples.",
                step + 1,
                len(candidates),
                o.bsize,
            )
            if self.overlap:
                per_candidate = [await task for task in scoring]
            else:
                pairs = [(wrap_program(c, o.metric), ex) for c in candidates for ex in batch]
                outputs = await self.runner.run_programs(pairs)
                per_candidate = [
                    [out["score"] for out in outputs[i * o.bsize : (i + 1) * o.bsize]]
                    for i in range(len(candidates))
                ]
        finally:
            await _cancel(scoring)
        averages = [sum(s) / len(s) for s in per_candidate]
        logger.info("Scores after %d batches: %s", step + 1, averages)
        won: tuple[Any, float] | None = None
        if averages:
            best = averages.index(max(averages))
            # copied before it is registered, as DSPy does (the copy keeps its source's simba_idx)
            won = (candidates[best].deepcopy(), averages[best])
        for system, system_scores in zip(candidates, per_candidate, strict=True):
            pool.register(system, system_scores)
        return won

    def _trajectory(
        self, source: Any, model: Any, example: Any, names: dict[int, str]
    ) -> Callable[[], Awaitable[dict[str, Any]]]:
        """A run of a copy of ``source`` on ``model`` (its predictors named in ``names``). The
        copy is made when the run starts, so copying is spread over the step's runs instead
        of holding up the first."""

        async def job() -> dict[str, Any]:
            system = fork_program(source)
            system.set_lm(model)
            for name, predictor in system.named_predictors():
                names[id(predictor)] = name
            return await wrap_program(system, self.o.metric).acall(example, self.runner.executor)

        return job

    def _buckets(self, outputs: list[dict[str, Any]], size: int) -> list[Any]:
        """Each example's runs, best first; examples sorted by (max-min gap, max score,
        max-avg gap), largest first (DSPy's order, ties kept in batch order)."""
        buckets = []
        for idx in range(size):
            bucket = [outputs[i] for i in range(idx, len(outputs), self.o.bsize)]
            bucket.sort(key=lambda x: x["score"], reverse=True)
            max_score = float(bucket[0]["score"])
            min_score = float(bucket[-1]["score"])
            avg_score = sum(x["score"] for x in bucket) / len(bucket)
            buckets.append((bucket, (max_score - min_score, max_score, max_score - avg_score)))
        buckets.sort(key=lambda x: x[1], reverse=True)
        return buckets

    async def _candidates(
        self,
        step: int,
        buckets: list[Any],
        context: dict[str, Any],
        batch: list[Any],
        scoring: list[asyncio.Task[list[Any]]],
    ) -> list[Any]:
        """New candidates from the top buckets until ``num_candidates + 1`` succeeded.

        The draws for a bucket (source program, demos to drop, strategy) are made in bucket
        order; a wave prepares as many buckets as candidates are still missing and runs their
        strategies at once, so exactly the buckets DSPy would process are processed. With
        concurrent runs each candidate's scoring on ``batch`` starts as soon as its strategy
        is done (a task appended to ``scoring``, in candidate order)."""
        o = self.o
        wanted = o.num_candidates + 1
        candidates: list[Any] = []
        position = 0
        while len(candidates) < wanted and position < len(buckets):
            wave = [
                self._prepare(bucket)
                for bucket, _ in buckets[position : position + wanted - len(candidates)]
            ]
            position += len(wave)
            attempts = [
                self._attempt(
                    step, batch, strategy, bucket, system, {**context, "name2predictor": names}
                )
                for bucket, system, names, strategy in wave
            ]
            if self.overlap:
                outcomes = await asyncio.gather(*attempts, return_exceptions=True)
            else:
                outcomes = [await attempt for attempt in attempts]
            stop: BaseException | None = None
            for (_, system, _, _), outcome in zip(wave, outcomes, strict=True):
                if isinstance(outcome, asyncio.Task):
                    scoring.append(outcome)
                elif isinstance(outcome, _Spent) or not isinstance(outcome, Exception | None):
                    stop = stop or outcome
                    continue
                elif outcome is not None:
                    logger.error("Strategy failed with error: %s", outcome)
                    continue
                candidates.append(system)
            if stop is not None:
                raise stop
        return candidates

    async def _attempt(
        self,
        step: int,
        batch: list[Any],
        strategy: Strategy,
        bucket: Any,
        system: Any,
        kwargs: dict[str, Any],
    ) -> asyncio.Task[list[Any]] | Exception | None:
        """One strategy applied to ``system`` (the exception it raised, if any); with
        concurrent runs, the task scoring the new candidate on ``batch``."""
        [outcome] = await self.runner.run([_strategy_job(strategy, bucket, system, kwargs)])
        if isinstance(outcome, Exception):
            return outcome
        if not self.overlap:
            return None
        with self.o.budget.in_phase(f"step {step + 1}: candidates"):
            return asyncio.create_task(self.runner.scores(system, self.o.metric, batch, False))

    def _prepare(self, bucket: list[dict[str, Any]]) -> tuple[Any, Any, dict[str, Any], Strategy]:
        """A copy of a softmax-drawn program with some demos dropped, and the strategy."""
        o, pool = self.o, self.pool
        source = pool.softmax_sample(
            self.rng, pool.top_k_plus_baseline(o.num_candidates), o.temperature_for_candidates
        )
        system = pool.programs[source].deepcopy()
        name2predictor = dict(system.named_predictors())
        counts = [len(p.demos) for p in name2predictor.values()]
        max_demos = o.max_demos if o.max_demos > 0 else 3
        num_demos = max(counts) if counts else 0
        drop = max(self.rng_np.poisson(num_demos / max_demos), int(num_demos >= max_demos))
        drop = min(drop, num_demos)
        dropped = [self.rng.randrange(num_demos) for _ in range(drop)]
        for predictor in name2predictor.values():
            predictor.demos = [d for i, d in enumerate(predictor.demos) if i not in dropped]
        strategy = self.rng.choice(o.strategies)
        logger.info(
            "Invoking strategy: %s%s",
            strategy.__name__,
            f", having dropped {drop} demos per predictor" if drop else "",
        )
        return bucket, system, name2predictor, strategy

    # ------------------------------------------------------------------ final selection
    def _score_early(self, winners: list[Any], steps_left: int) -> None:
        """Start scoring on the trainset (in slots the steps leave idle) each winner that
        the final selection scores whatever the remaining steps add: DSPy scores them after
        the last step, with the same requests."""
        if not self.early_scoring:
            return
        width = self.o.num_candidates + 1
        last = len(winners) - 1
        for k in range(len(winners)):
            if k in self.early or any(
                k not in _final_indices(final, width)
                for final in range(last, last + steps_left + 1)
            ):
                continue
            program = winners[k].deepcopy()
            with self.o.budget.in_phase("validation"):
                task = asyncio.create_task(
                    self.runner.scores(program, self.o.metric, self.trainset, True)
                )
            self.early[k] = (program, task)

    async def _finish(self, winners: list[Any], winner_scores: list[float]) -> Any:
        o = self.o
        idxs = _final_indices(len(winners) - 1, o.num_candidates + 1)
        early = [self.early.pop(i, None) for i in idxs]
        candidates = [
            e[0] if e else winners[i].deepcopy() for i, e in zip(idxs, early, strict=True)
        ]
        logger.info("VALIDATION: Evaluating %d programs on the full trainset.", len(candidates))
        o.budget.phase = "validation"
        size = len(self.trainset)
        late = [k for k, e in enumerate(early) if e is None]
        pairs = [(wrap_program(candidates[k], o.metric), ex) for k in late for ex in self.trainset]
        try:
            outputs = await self.runner.run_programs(pairs)
            chunks = {
                k: [out["score"] for out in outputs[n * size : (n + 1) * size]]
                for n, k in enumerate(late)
            }
            for k, e in enumerate(early):
                if e is not None:
                    chunks[k] = await e[1]
        except _Spent:
            self._stopping("in the final scoring: programs ranked by their mini-batch scores")
            scores = [winner_scores[i] for i in idxs]
        else:
            scores = []
            for k in range(len(candidates)):
                chunk = chunks[k]
                scores.append(sum(chunk) / len(chunk) if chunk else 0.0)
                if k != 0:
                    self.trial_logs[k - 1]["train_score"] = scores[-1]
        ranked = [{"score": s, "program": p} for s, p in zip(scores, candidates, strict=True)]
        ranked.sort(key=lambda x: x["score"], reverse=True)
        best_idx = scores.index(max(scores)) if scores else 0
        best = candidates[best_idx].deepcopy()
        logger.info(
            "Final trainset scores: %s, Best: %s (at index %d)", scores, max(scores), best_idx
        )
        best.candidate_programs = ranked
        best.trial_logs = self.trial_logs
        return best


def _final_indices(last: int, width: int) -> list[int]:
    """The winners the final selection scores on the trainset (DSPy's choice: ``width``
    evenly spaced indices from 0 to ``last``, rounded, without repeats)."""
    if last < 1:
        return [0]
    return list(dict.fromkeys(round(i * last / (width - 1)) for i in range(width)))


async def _cancel(tasks: list[asyncio.Task[Any]]) -> None:
    """Cancel the unfinished ``tasks`` and wait for all of them (their errors are dropped)."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _strategy_job(
    strategy: Strategy, bucket: Any, system: Any, kwargs: dict[str, Any]
) -> Callable[[], Awaitable[bool]]:
    return lambda: strategy.acall(bucket, system, **kwargs)
