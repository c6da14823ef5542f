"""``BootstrapFewShot``: demos from the teacher's own successful traces, then labeled ones.

DSPy runs the teacher on the trainset one example at a time, in order, until
``max_bootstrapped_demos`` examples have succeeded. Here up to ``num_threads`` examples run at
once: the ones that could still be needed (while the examples before them cannot already
supply the missing successes) plus a few run ahead, as many as cost at most about
``num_threads`` LM calls (``num_threads // (calls per attempt * max_rounds)`` examples, the
calls per attempt measured on the examples done so far). Results are consumed in trainset
order and the loop stops where DSPy's stops (examples run ahead past that point are
discarded, their metric results unused), so errors are counted in DSPy's order and the
compiled demos are the ones DSPy picks; the LM calls paid are DSPy's plus at most those of the
examples run ahead. When the loop stops, examples still running are stopped at their next
module call (:func:`~dspex.primitives.calling.stoppable`) and waited for, not abandoned: a
program's sync ``forward`` runs in a worker thread that cancellation cannot reach, so
``compile`` returns only once every LM call it started has ended (at most one LM call per
such example). If the compile itself fails or is cancelled, they are cancelled instead. Inside another optimizer that shares one limit of program runs between
several bootstraps (random search, MIPROv2) nothing runs ahead: the calls are exactly DSPy's.
With ``num_threads=1`` the LM requests are also sent in DSPy's order.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import random
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dspex import settings
from dspex._sync import run_sync
from dspex.errors import OptimizerError
from dspex.modules.predict import serialize_object
from dspex.primitives.calling import stoppable
from dspex.primitives.example import Example
from dspex.teleprompt._dspy_hash import dspy_hash_demos
from dspex.teleprompt.run import PhaseProgress, Run, RunOptions
from dspex.teleprompt.teleprompt import Teleprompter
from dspex.teleprompt.vanilla import LabeledFewShot

__all__ = ["BootstrapFewShot", "default_max_errors", "fork_program"]

logger = logging.getLogger(__name__)

DEFAULT_NUM_THREADS = 8
_DSPY_MAX_ERRORS = 10


def default_max_errors() -> int:
    """``settings.max_errors`` when the settings carry it, else DSPy's default (10)."""
    value = getattr(settings.current(), "max_errors", None)
    return int(value) if isinstance(value, int) else _DSPY_MAX_ERRORS


def fork_program(program: Any) -> Any:
    """A copy of ``program`` with its own demo lists; LM objects (connection pools),
    signatures and the demo examples themselves (never mutated by a run) are shared."""
    memo: dict[int, Any] = {}
    for _, predictor in program.named_predictors():
        shared = [getattr(predictor, "lm", None), getattr(predictor, "signature", None)]
        shared.extend(getattr(predictor, "demos", None) or ())
        for obj in shared:
            if obj is not None:
                memo[id(obj)] = obj
    try:
        return copy.deepcopy(program, memo)
    except Exception:
        return program.deepcopy()


@dataclass
class _Attempt:
    """One run of the teacher on one example (one round)."""

    success: bool
    error: BaseException | None = None
    traces: dict[str, list[Example]] = field(default_factory=dict)
    calls: int = 0
    """Predictor calls the attempt made (its trace's length)."""


class BootstrapFewShot(RunOptions, Teleprompter):
    """DSPy's ``BootstrapFewShot`` with the same arguments, defaults and compiled demos.

    DSPex only: ``num_threads`` bounds how many training examples run at once (``1`` runs
    them strictly one after the other as DSPy does); ``max_lm_calls``/``max_cost`` (USD) stop
    starting new examples once that many LM calls were made / that much was paid, and the
    program is compiled from the demos found so far; ``run_dir`` checkpoints after every
    training example and resumes a run started again with the same directory (``resume``: the
    same, but the directory must hold a run to resume); ``display_progress`` shows a progress bar on a terminal. ``budget.calls`` holds the LM
    calls made, by phase; ``compiled.run_summary`` the calls, tokens and cost per phase.
    """

    def __init__(
        self,
        metric: Callable[..., Any] | None = None,
        metric_threshold: float | None = None,
        teacher_settings: Mapping[str, Any] | None = None,
        max_bootstrapped_demos: int = 4,
        max_labeled_demos: int = 16,
        max_rounds: int = 1,
        max_errors: int | None = None,
        *,
        num_threads: int | None = None,
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
        self.metric_threshold = metric_threshold
        self.teacher_settings: dict[str, Any] = dict(teacher_settings or {})
        self.max_bootstrapped_demos = max_bootstrapped_demos
        self.max_labeled_demos = max_labeled_demos
        self.max_rounds = max_rounds
        self.max_errors = max_errors
        self.num_threads = num_threads
        self.error_count = 0
        self._limiter: asyncio.Semaphore | None = None
        """Shared with other optimizer work running at the same time (random search)."""
        self._run_ahead = True
        """Whether examples may run ahead of need (off inside random search and MIPROv2)."""

    # ------------------------------------------------------------------ compile
    def compile(self, student: Any, *, teacher: Any = None, trainset: list[Any]) -> Any:  # type: ignore[override]
        return run_sync(self.acompile(student, teacher=teacher, trainset=trainset))

    async def acompile(self, student: Any, *, teacher: Any = None, trainset: list[Any]) -> Any:
        """``compile`` for async callers (the same work, on the caller's event loop)."""
        self.trainset = list(trainset)
        run = self._open_run(
            "BootstrapFewShot",
            student,
            teacher=teacher,
            lm=settings.current().lm,
            trainset=self.trainset,
        )
        self._prepare_student_and_teacher(student, teacher)
        self._prepare_predictor_mappings()
        with run:
            self.budget.check_prices(settings.current().lm, self.teacher_settings.get("lm"))
            with run.phase("bootstrap", total=len(self.trainset)) as bar:
                await self._bootstrap(run=run, bar=bar)
        self.student = self._train()
        self.student._compiled = True
        self.student.run_summary = run.summary
        return self.student

    def _args(self) -> dict[str, Any]:
        """The arguments a resumed run must share (budgets and concurrency may change)."""
        return {
            "metric": self.metric,
            "metric_threshold": self.metric_threshold,
            "teacher_settings": self.teacher_settings,
            "max_bootstrapped_demos": self.max_bootstrapped_demos,
            "max_labeled_demos": self.max_labeled_demos,
            "max_rounds": self.max_rounds,
            "max_errors": self.max_errors,
        }

    def _prepare_student_and_teacher(self, student: Any, teacher: Any) -> None:
        self.student = student.reset_copy()
        self.teacher = teacher.deepcopy() if teacher is not None else student.deepcopy()
        if getattr(self.student, "_compiled", False):
            raise OptimizerError("Student must be uncompiled.")
        if self.max_labeled_demos and not getattr(self.teacher, "_compiled", False):
            labeled = LabeledFewShot(k=self.max_labeled_demos)
            self.teacher = labeled.compile(self.teacher.reset_copy(), trainset=self.trainset)

    def _prepare_predictor_mappings(self) -> None:
        student, teacher = self.student.named_predictors(), self.teacher.named_predictors()
        if len(student) != len(teacher):
            raise OptimizerError("Student and teacher must have the same number of predictors.")
        self.name2predictor: dict[str, None] = {}
        for (name1, pred1), (name2, pred2) in zip(student, teacher, strict=True):
            if name1 != name2:
                raise OptimizerError("Student and teacher must have the same program structure.")
            if not pred1.signature.equals(pred2.signature):
                raise OptimizerError(
                    f"Student and teacher must have the same signatures. "
                    f"{type(pred1.signature)} != {type(pred2.signature)}"
                )
            if pred1 is pred2:
                raise OptimizerError("Student and teacher must be different objects.")
            self.name2predictor[name1] = None

    # ------------------------------------------------------------------ bootstrap
    async def _bootstrap(
        self,
        *,
        max_bootstraps: int | None = None,
        run: Run | None = None,
        bar: PhaseProgress | None = None,
    ) -> None:
        max_bootstraps = max_bootstraps or self.max_bootstrapped_demos
        width = self.num_threads or DEFAULT_NUM_THREADS
        self.name2traces: dict[str, list[Example]] = {name: [] for name in self.name2predictor}
        bootstrapped: dict[int, bool] = {}
        attempts = 0
        consumed = 0
        saved = run.restore("bootstrap") if run is not None else None
        if saved is not None:
            consumed, attempts, self.error_count = (
                saved["consumed"],
                saved["attempts"],
                saved["error_count"],
            )
            bootstrapped = dict.fromkeys(saved["bootstrapped"], True)
            for name, demos in saved["traces"].items():
                self.name2traces[name] = [Example(**demo) for demo in demos]
            if bar is not None:
                bar.advance(consumed)
        calls_per_attempt = max(1, len(self.name2predictor))
        pending: deque[asyncio.Task[list[_Attempt]]] = deque()
        stop = threading.Event()
        finished = False
        try:
            while len(bootstrapped) < max_bootstraps:
                if not (pending and pending[0].done()):
                    # Every finished result is consumed first: start only the examples that
                    # could still be needed after them, plus those run ahead.
                    ahead = self._ahead(width, calls_per_attempt)
                    while (
                        consumed + len(pending) < len(self.trainset)
                        and len(pending) < min(width, max_bootstraps - len(bootstrapped) + ahead)
                        and not (run.spent if run is not None else self.budget.spent)
                    ):
                        example = self.trainset[consumed + len(pending)]
                        pending.append(asyncio.ensure_future(self._run_example(example, stop)))
                    if not pending:
                        break
                    await asyncio.wait([pending[0]])
                results = pending.popleft().result()
                for attempt in results:
                    calls_per_attempt = max(calls_per_attempt, attempt.calls)
                    attempts += 1
                    if attempt.error is not None:
                        self._count_error(attempt.error, self.trainset[consumed])
                    if attempt.success:
                        bootstrapped[consumed] = True
                        for name, demos in attempt.traces.items():
                            self.name2traces[name].extend(demos)
                        break
                consumed += 1
                if bar is not None:
                    bar.advance()
                if run is not None:
                    run.checkpoint(
                        "bootstrap",
                        {
                            "consumed": consumed,
                            "attempts": attempts,
                            "error_count": self.error_count,
                            "bootstrapped": sorted(bootstrapped),
                            "traces": {
                                name: [serialize_object(demo.toDict()) for demo in demos]
                                for name, demos in self.name2traces.items()
                            },
                        },
                    )
            finished = True
        finally:
            stop.set()
            if not finished:
                for task in pending:
                    task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        logger.info(
            "Bootstrapped %d full traces from %d examples for up to %d rounds, "
            "amounting to %d attempts.",
            len(bootstrapped),
            consumed,
            self.max_rounds,
            attempts,
        )
        validation = [x for idx, x in enumerate(self.trainset) if idx not in bootstrapped]
        random.Random(0).shuffle(validation)
        self.validation = validation

    def _ahead(self, width: int, calls_per_attempt: int) -> int:
        """How many examples may run beyond those that could still be needed: as many as
        cost at most ``width`` LM calls (none when another optimizer shares the limit)."""
        if not self._run_ahead or self._limiter is not None or width <= 1:
            return 0
        if self.budget.max_lm_calls is not None or self.budget.max_cost is not None:
            return 0  # a budget is for the calls DSPy would make
        return width // (calls_per_attempt * max(1, self.max_rounds))

    def _count_error(self, error: BaseException, example: Any) -> None:
        self.error_count += 1
        limit = self.max_errors if self.max_errors is not None else default_max_errors()
        if self.error_count >= limit:
            raise error
        logger.error(
            "Failed to run or to evaluate example %s with %s due to %s.",
            example,
            self.metric,
            error,
        )

    async def _run_example(self, example: Any, stop: threading.Event) -> list[_Attempt]:
        """Every round for one example until one succeeds (on a private copy of the teacher);
        once ``stop`` is set, no round starts and no module call is made."""
        if self._limiter is not None:
            async with self._limiter:
                return await self._run_rounds(example, stop)
        return await self._run_rounds(example, stop)

    async def _run_rounds(self, example: Any, stop: threading.Event) -> list[_Attempt]:
        teacher = fork_program(self.teacher)
        names = {id(p): name for name, p in teacher.named_predictors()}
        for _, predictor in teacher.named_predictors():
            predictor.demos = [x for x in predictor.demos if x != example]
        results: list[_Attempt] = []
        with stoppable(stop):
            for round_idx in range(self.max_rounds):
                if stop.is_set():
                    break
                attempt = await self._attempt(teacher, names, example, round_idx)
                results.append(attempt)
                if attempt.success:
                    break
        return results

    async def _attempt(
        self, teacher: Any, names: dict[int, str], example: Any, round_idx: int
    ) -> _Attempt:
        trace: list[Any] = []
        try:
            with settings.context(trace=trace, **self.teacher_settings):
                if round_idx > 0:
                    # A fresh rollout at temperature 1.0 gets past the cache (DSPy's rule).
                    lm = settings.current().lm
                    if lm is None or not hasattr(lm, "copy"):
                        raise OptimizerError("max_rounds > 1 needs a configured LM with copy()")
                    rollout = lm.copy(rollout_id=round_idx, temperature=1.0)
                    with settings.context(lm=rollout):
                        prediction = await teacher.acall(**example.inputs())
                else:
                    prediction = await teacher.acall(**example.inputs())
                success = await self._judge(example, prediction, trace)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return _Attempt(False, exc, calls=len(trace))
        if not success:
            return _Attempt(False, calls=len(trace))
        return _Attempt(True, traces=self._demos_from_trace(trace, names), calls=len(trace))

    async def _judge(self, example: Any, prediction: Any, trace: list[Any]) -> bool:
        if not self.metric:
            return True
        value = await asyncio.to_thread(self.metric, example, prediction, trace)
        if self.metric_threshold:
            return bool(value >= self.metric_threshold)
        return bool(value)

    @staticmethod
    def _demos_from_trace(trace: list[Any], names: dict[int, str]) -> dict[str, list[Example]]:
        by_name: dict[str, list[Example]] = {}
        for predictor, inputs, outputs in trace:
            name = names.get(id(predictor))
            if name is None:
                continue  # a predictor outside the teacher (DSPy skips these too)
            by_name.setdefault(name, []).append(Example(augmented=True, **inputs, **outputs))
        for name, demos in by_name.items():
            if len(demos) > 1:
                # One demo per predictor and example: DSPy's seeded 50/50 draw.
                rng = random.Random(dspy_hash_demos(demos))
                by_name[name] = [rng.choice(demos[:-1]) if rng.random() < 0.5 else demos[-1]]
        return by_name

    # ------------------------------------------------------------------ student
    def _train(self) -> Any:
        rng = random.Random(0)
        raw_demos = self.validation
        for name, predictor in self.student.named_predictors():
            augmented = self.name2traces[name][: self.max_bootstrapped_demos]
            sample_size = max(0, min(self.max_labeled_demos - len(augmented), len(raw_demos)))
            predictor.demos = augmented + rng.sample(raw_demos, sample_size)
        return self.student
