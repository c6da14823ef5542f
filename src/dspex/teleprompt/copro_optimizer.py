"""``COPRO``: coordinate ascent over each predictor's instruction and output prefix.

DSPy's algorithm and prompts: for every predictor, ask the prompt model for ``breadth - 1``
instruction/prefix candidates (plus the current one), score each candidate program with
:class:`~dspex.evaluate.Evaluate` on the trainset, keep the best, and for ``depth`` rounds
propose new candidates from the scored attempts.

DSPy scores one candidate after the other. The candidates of one predictor in one round are
independent (the other predictors are fixed while they are scored), so here they are scored at
the same time on their own copies under one limit of ``num_threads`` program runs, and the
scores are read in DSPy's order; ``num_threads=1`` (in ``eval_kwargs``) keeps DSPy's order of
LM requests.

DSPex only: ``max_lm_calls``/``max_cost`` stop before the next predictor's candidates or the
next depth once spent (the best program scored so far is returned); ``run_dir`` checkpoints
after every depth and resumes a run started again with the same directory;
``compiled.run_summary`` holds the LM calls, tokens and cost of the ``propose`` and
``evaluate`` phases.
"""

from __future__ import annotations

import asyncio
import logging
import os
import statistics
from collections import defaultdict
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from dspex import settings
from dspex._sync import run_sync
from dspex.modules.predict import Predict
from dspex.primitives.prediction import Completions
from dspex.signatures import InputField, OutputField, Signature
from dspex.teleprompt.limits import Limited, default_threads
from dspex.teleprompt.run import Run, RunOptions
from dspex.teleprompt.teleprompt import Teleprompter

__all__ = ["COPRO", "BasicGenerateInstruction", "GenerateInstructionGivenAttempts"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class BasicGenerateInstruction(Signature):
    """You are an instruction optimizer for large language models. I will give you a ``signature`` of fields (inputs and outputs) in English. Your task is to propose an instruction that will lead a good language model to perform the task well. Don't be afraid to be creative."""

    basic_instruction: str = InputField(desc="The initial instructions before optimization")
    proposed_instruction: str = OutputField(desc="The improved instructions for the language model")
    proposed_prefix_for_output_field: str = OutputField(
        desc="The string at the end of the prompt, which will help the model start solving the task",
    )


class GenerateInstructionGivenAttempts(Signature):
    """You are an instruction optimizer for large language models. I will give some task instructions I've tried, along with their corresponding validation scores. The instructions are arranged in increasing order based on their scores, where higher scores indicate better quality.

    Your task is to propose a new instruction that will lead a good language model to perform the task even better. Don't be afraid to be creative."""

    attempted_instructions: str = InputField()
    proposed_instruction: str = OutputField(desc="The improved instructions for the language model")
    proposed_prefix_for_output_field: str = OutputField(
        desc="The string at the end of the prompt, which will help the model start solving the task",
    )


def _stats() -> dict[str, list[Any]]:
    return {"depth": [], "max": [], "average": [], "min": [], "std": []}


def _record(stats: dict[str, list[Any]], depth: int, scores: list[float]) -> None:
    stats["depth"].append(depth)
    stats["max"].append(max(scores))
    stats["average"].append(sum(scores) / len(scores))
    stats["min"].append(min(scores))
    stats["std"].append(statistics.pstdev(scores))


class COPRO(RunOptions, Teleprompter):
    """DSPy's ``COPRO`` with the same arguments, defaults, prompts and result."""

    def __init__(
        self,
        prompt_model: Any = None,
        metric: Callable[..., Any] | None = None,
        breadth: int = 10,
        depth: int = 3,
        init_temperature: float = 1.4,
        track_stats: bool = False,
        *,
        max_lm_calls: int | None = None,
        max_cost: float | None = None,
        run_dir: str | os.PathLike[str] | None = None,
        display_progress: bool = True,
        resume: str | os.PathLike[str] | None = None,
        **_kwargs: Any,
    ) -> None:
        if breadth <= 1:
            raise ValueError("Breadth must be greater than 1")
        self._set_run_options(max_lm_calls, max_cost, run_dir, display_progress, resume)
        self.metric = metric
        self.breadth = breadth
        self.depth = depth
        self.init_temperature = init_temperature
        self.prompt_model = prompt_model
        self.track_stats = track_stats

    # ------------------------------------------------------------------ helpers (DSPy's names)
    @staticmethod
    def _get_signature(predictor: Any) -> Any:
        return predictor.signature

    @staticmethod
    def _set_signature(predictor: Any, updated_signature: Any) -> None:
        predictor.signature = updated_signature

    def _check_candidates_equal(
        self, candidate1: dict[str, Any], candidate2: dict[str, Any]
    ) -> bool:
        pairs = zip(
            candidate1["program"].predictors(), candidate2["program"].predictors(), strict=False
        )
        for p1, p2 in pairs:
            sig1, sig2 = self._get_signature(p1), self._get_signature(p2)
            if sig1.instructions != sig2.instructions:
                return False
            # DSPy compares the last fields' FieldInfo objects, which compare by identity.
            if list(sig1.fields.values())[-1] is not list(sig2.fields.values())[-1]:
                return False
        return True

    def _drop_duplicates(self, candidates: list[dict[str, Any]]) -> list[dict[str, Any]]:
        final: list[dict[str, Any]] = []
        last_batch: list[dict[str, Any]] = []
        last_batch_score: float = -1
        keys: dict[int, list[tuple[str, Any]]] = {}

        def key(c: dict[str, Any]) -> list[tuple[str, Any]]:
            """What ``_check_candidates_equal`` compares, read once per candidate."""
            found = keys.get(id(c))
            if found is None:
                sigs = [self._get_signature(p) for p in c["program"].predictors()]
                found = [(sig.instructions, list(sig.fields.values())[-1]) for sig in sigs]
                keys[id(c)] = found
            return found

        def equal(c1: dict[str, Any], c2: dict[str, Any]) -> bool:
            pairs = zip(key(c1), key(c2), strict=False)
            return all(i1 == i2 and f1 is f2 for (i1, f1), (i2, f2) in pairs)

        for c in candidates:
            repeat = False
            if c["score"] == last_batch_score:
                repeat = any(equal(c, c2) for c2 in last_batch)
                if not repeat:
                    last_batch.append(c)
            else:
                last_batch = [c]
                last_batch_score = c["score"]
            if not repeat:
                final.append(c)
        return final

    async def _propose(
        self, limiter: asyncio.Semaphore, signature: Any, n: int, **inputs: Any
    ) -> Any:
        """One proposal call, holding a slot of ``limiter`` (program runs hold the others)."""
        predict = Predict(signature, n=n, temperature=self.init_temperature)
        async with limiter:
            with self.budget.in_phase("propose"):
                if self.prompt_model:
                    with settings.context(lm=self.prompt_model):
                        return (await predict.acall(**inputs)).completions
                return (await predict.acall(**inputs)).completions

    def _args(self) -> dict[str, Any]:
        """The arguments a resumed run must share (budgets may change)."""
        return {
            "prompt_model": self.prompt_model,
            "metric": self.metric,
            "breadth": self.breadth,
            "depth": self.depth,
            "init_temperature": self.init_temperature,
            "track_stats": self.track_stats,
        }

    # ------------------------------------------------------------------ compile
    def compile(  # type: ignore[override]
        self, student: Any, *, trainset: list[Any], eval_kwargs: dict[str, Any] | None = None
    ) -> Any:
        return run_sync(self.acompile(student, trainset=trainset, eval_kwargs=eval_kwargs))

    async def acompile(
        self, student: Any, *, trainset: list[Any], eval_kwargs: dict[str, Any] | None = None
    ) -> Any:
        """``compile`` for async callers."""
        eval_kwargs = eval_kwargs or {}
        run = self._open_run(
            "COPRO",
            student,
            lm=settings.current().lm,
            trainset=list(trainset),
            eval_kwargs={k: v for k, v in eval_kwargs.items() if k != "num_threads"},
            # Evaluate's own bar would clash with ours (one live display at a time)
            display_progress=self.display_progress and not eval_kwargs.get("display_progress"),
        )
        with run:
            self.budget.check_prices(settings.current().lm, self.prompt_model)
            best = await self._search(student, trainset, eval_kwargs, run)
        best.run_summary = run.summary
        return best

    async def _search(
        self, student: Any, trainset: list[Any], eval_kwargs: dict[str, Any], run: Run
    ) -> Any:
        from dspex.evaluate import Evaluate

        module = student.deepcopy()
        evaluate = Evaluate(devset=trainset, metric=self.metric, **eval_kwargs)
        threads = eval_kwargs.get("num_threads") or default_threads()
        limiter = asyncio.Semaphore(threads)
        total_calls = 0
        predictors = module.predictors()
        results_best = {id(p): _stats() for p in predictors}
        results_latest = {id(p): _stats() for p in predictors}
        evaluated: dict[int, dict[tuple[str, str], dict[str, Any]]] = defaultdict(dict)

        # concurrent runs: the predictors' proposal calls run at once, and (without budgets,
        # whose cut-short rules follow DSPy's order of work) a predictor's next-round
        # proposal starts as soon as its candidates are scored, while the next predictors'
        # candidates are scored
        concurrent = threads > 1
        early = concurrent and self.budget.max_lm_calls is None and self.budget.max_cost is None
        candidates: dict[int, Any] = {}
        saved = run.restore("copro")
        basics: list[tuple[Any, str, str]] = []
        for predictor in [] if saved is not None else predictors:
            signature = self._get_signature(predictor)
            last_key = list(signature.fields)[-1]
            basic_prefix = signature.fields[last_key].json_schema_extra["prefix"]
            basics.append((predictor, signature.instructions, basic_prefix))
        initial = await _in_turn(
            concurrent,
            [
                self._propose(
                    limiter, BasicGenerateInstruction, self.breadth - 1, basic_instruction=basic
                )
                for _, basic, _ in basics
            ],
        )
        for (predictor, basic_instruction, basic_prefix), proposed in zip(
            basics, initial, strict=True
        ):
            proposed.proposed_instruction.append(basic_instruction)
            proposed.proposed_prefix_for_output_field.append(basic_prefix)
            candidates[id(predictor)] = proposed
            evaluated[id(predictor)] = {}

        latest_candidates = all_candidates = candidates
        module_clone = module.deepcopy()
        first_depth = 0
        if saved is not None:
            first_depth, total_calls = saved["next_depth"], saved["total_calls"]
            state = _Restored(module, predictors, saved)
            module_clone = state.program(saved["module_clone"])
            all_candidates = state.candidates("all_candidates")
            latest_candidates = state.candidates("latest_candidates")
            evaluated.update(state.evaluated())
            results_best, results_latest = (
                state.stats("results_best"),
                state.stats("results_latest"),
            )
        d = first_depth
        proposing: dict[int, asyncio.Task[Any]] = {}
        new_candidates: dict[int, Any] = {}

        def propose_next(p_base: Any, depth: int) -> None:
            """Start ``p_base``'s next-round proposal from its scored attempts."""
            ranked = sorted(evaluated[id(p_base)].values(), key=lambda x: x["score"], reverse=True)
            shortest_len = min(len(evaluated[id(p_base)]), self.breadth)
            if self.track_stats:
                _record(results_best[id(p_base)], depth, [x["score"] for x in ranked][:10])
            attempts: list[str] = []
            for i in range(shortest_len - 1, -1, -1):
                attempts.append(f"Instruction #{shortest_len - i}: {ranked[i]['instruction']}")
                attempts.append(f"Prefix #{shortest_len - i}: {ranked[i]['prefix']}")
                attempts.append(f"Resulting Score #{shortest_len - i}: {ranked[i]['score']}")
            proposing[id(p_base)] = asyncio.ensure_future(
                self._propose(
                    limiter,
                    GenerateInstructionGivenAttempts,
                    self.breadth,
                    attempted_instructions=attempts,
                )
            )

        async def settle(p_base: Any) -> None:
            """Add ``p_base``'s next-round proposals to its candidates (DSPy's lists)."""
            task = proposing.pop(id(p_base), None)
            if task is None:
                return
            proposed = await task
            new_candidates[id(p_base)] = proposed
            all_candidates[id(p_base)].proposed_instruction.extend(proposed.proposed_instruction)
            all_candidates[id(p_base)].proposed_prefix_for_output_field.extend(
                proposed.proposed_prefix_for_output_field
            )

        try:
            with run.progress("COPRO depth", total=self.depth) as bar:
                bar.advance(first_depth)
                for d in range(first_depth, self.depth):
                    logger.info("Iteration Depth: %d/%d.", d + 1, self.depth)
                    latest_scores: list[float] = []
                    clone_predictors = module_clone.predictors()
                    for p_i, (p_old, p_new) in enumerate(
                        zip(predictors, clone_predictors, strict=False)
                    ):
                        if any(evaluated.values()) and run.spent:
                            break
                        await settle(p_old)
                        pool = all_candidates if len(predictors) > 1 else latest_candidates
                        candidates_ = pool[id(p_old)]
                        trials: list[tuple[str, str, Any]] = []
                        for c in candidates_:
                            instruction = c.proposed_instruction.strip('"').strip()
                            prefix = c.proposed_prefix_for_output_field.strip('"').strip()
                            last_key = list(self._get_signature(p_new).fields)[-1]
                            updated = (
                                self._get_signature(p_new)
                                .with_instructions(instruction)
                                .with_updated_fields(last_key, prefix=prefix)
                            )
                            self._set_signature(p_new, updated)
                            trials.append((instruction, prefix, module_clone.deepcopy()))
                        logger.info(
                            "At Depth %d/%d, evaluating %d prompt candidates for Predictor %d of %d.",
                            d + 1,
                            self.depth,
                            len(trials),
                            p_i + 1,
                            len(predictors),
                        )
                        with self.budget.in_phase("evaluate"):
                            scores = await self._score(
                                evaluate, trainset, eval_kwargs, trials, limiter
                            )
                        for c_i, ((instruction, prefix, program), score) in enumerate(
                            zip(trials, scores, strict=True)
                        ):
                            total_calls += 1
                            seen = evaluated[id(p_old)].get((instruction, prefix))
                            if seen is None or seen["score"] < score:
                                evaluated[id(p_old)][(instruction, prefix)] = {
                                    "score": score,
                                    "program": program,
                                    "instruction": instruction,
                                    "prefix": prefix,
                                    "depth": d,
                                }
                            if len(candidates_) - self.breadth <= c_i:
                                latest_scores.append(score)
                        if self.track_stats:
                            _record(results_latest[id(p_old)], d, latest_scores)
                        best = max(evaluated[id(p_old)].values(), key=lambda cand: cand["score"])
                        last_key = list(self._get_signature(p_old).fields)[-1]
                        updated = (
                            self._get_signature(p_new)
                            .with_instructions(best["instruction"])
                            .with_updated_fields(last_key, prefix=best["prefix"])
                        )
                        self._set_signature(p_new, updated)
                        if early and d < self.depth - 1:
                            propose_next(p_old, d)

                    if d == self.depth - 1 or run.spent:
                        bar.advance()
                        break

                    new_candidates = {}
                    latest_candidates = new_candidates
                    if not early:  # at the end of the depth as DSPy (at once if concurrent)
                        for p_base in predictors if concurrent else ():
                            propose_next(p_base, d)
                        for p_base in predictors:
                            if not concurrent:
                                propose_next(p_base, d)
                            await settle(p_base)
                    bar.advance()
                    if run.dir is not None:
                        for p_base in predictors:
                            await settle(p_base)
                        run.checkpoint(
                            "copro",
                            {
                                "next_depth": d + 1,
                                "total_calls": total_calls,
                                "module_clone": module_clone.dump_state(),
                                "all_candidates": _dump_candidates(predictors, all_candidates),
                                "latest_candidates": _dump_candidates(
                                    predictors, latest_candidates
                                ),
                                "evaluated": [
                                    [
                                        {**entry, "program": entry["program"].dump_state()}
                                        for entry in evaluated[id(p)].values()
                                    ]
                                    for p in predictors
                                ],
                                "results_best": [results_best[id(p)] for p in predictors],
                                "results_latest": [results_latest[id(p)] for p in predictors],
                            },
                        )
        finally:
            for task in proposing.values():
                task.cancel()
            await asyncio.gather(*proposing.values(), return_exceptions=True)

        final: list[dict[str, Any]] = []
        for predictor in predictors:
            final.extend(evaluated[id(predictor)].values())
            if self.track_stats:
                ranked = sorted(
                    evaluated[id(predictor)].values(), key=lambda x: x["score"], reverse=True
                )
                _record(results_best[id(predictor)], d, [x["score"] for x in ranked][:10])
        final.sort(key=lambda x: x["score"], reverse=True)
        final = self._drop_duplicates(final)

        best_program = final[0]["program"]
        best_program.candidate_programs = final
        best_program.total_calls = total_calls
        if self.track_stats:
            best_program.results_best = results_best
            best_program.results_latest = results_latest
        return best_program

    @staticmethod
    async def _score(
        evaluate: Any,
        trainset: list[Any],
        eval_kwargs: dict[str, Any],
        trials: list[tuple[str, str, Any]],
        limiter: asyncio.Semaphore,
    ) -> list[float]:
        async def one(program: Any) -> float:
            result = await evaluate.acall(Limited(program, limiter), devset=trainset, **eval_kwargs)
            return float(result.score)

        if eval_kwargs.get("num_threads") == 1:
            return [await one(program) for *_, program in trials]
        return list(await asyncio.gather(*(one(program) for *_, program in trials)))


async def _in_turn(concurrent: bool, calls: list[Coroutine[Any, Any, T]]) -> list[T]:
    """The calls' results in order: run at once when ``concurrent``, else one after another."""
    if concurrent:
        return list(await asyncio.gather(*calls))
    return [await call for call in calls]


def _dump_candidates(predictors: list[Any], candidates: dict[int, Any]) -> list[dict[str, Any]]:
    return [{k: list(v) for k, v in candidates[id(p)].items()} for p in predictors]


class _Restored:
    """COPRO's working state read back from a checkpoint (programs rebuilt from their state)."""

    def __init__(self, module: Any, predictors: list[Any], saved: dict[str, Any]) -> None:
        self.module = module
        self.predictors = predictors
        self.saved = saved

    def program(self, state: dict[str, Any]) -> Any:
        program = self.module.deepcopy()
        program.load_state(state)
        return program

    def candidates(self, key: str) -> dict[int, Any]:
        out: dict[int, Any] = {}
        for predictor, fields in zip(self.predictors, self.saved[key], strict=True):
            completions = Completions({})
            completions._completions = {k: list(v) for k, v in fields.items()}
            out[id(predictor)] = completions
        return out

    def evaluated(self) -> dict[int, dict[tuple[str, str], dict[str, Any]]]:
        out: dict[int, dict[tuple[str, str], dict[str, Any]]] = {}
        for predictor, entries in zip(self.predictors, self.saved["evaluated"], strict=True):
            out[id(predictor)] = {
                (e["instruction"], e["prefix"]): {**e, "program": self.program(e["program"])}
                for e in entries
            }
        return out

    def stats(self, key: str) -> dict[int, dict[str, list[Any]]]:
        return {
            id(p): {k: list(v) for k, v in stats.items()}
            for p, stats in zip(self.predictors, self.saved[key], strict=True)
        }
