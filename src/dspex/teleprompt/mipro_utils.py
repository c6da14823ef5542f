"""The pieces of MIPROv2 that DSPy keeps in ``dspy.teleprompt.utils``, on native programs.

``create_n_fewshot_demo_sets`` builds DSPy's demo candidates seed by seed (zero-shot, labeled
only, bootstrapped in trainset order, then bootstrapped on shuffled trainsets). Every draw
from ``rng`` comes first, in DSPy's order; the bootstraps then run one after the other
(``num_threads=1``, or with a ``max_lm_calls``/``max_cost`` budget) or all at once under one
limit of ``num_threads`` program runs. The bootstraps are independent, so the demos are DSPy's
either way.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dspex._sync import run_sync
from dspex.modules.predict import serialize_object
from dspex.primitives.example import Example
from dspex.primitives.prediction import Prediction
from dspex.teleprompt.bootstrap import BootstrapFewShot, default_max_errors
from dspex.teleprompt.budget import CallBudget
from dspex.teleprompt.limits import default_threads
from dspex.teleprompt.vanilla import LabeledFewShot

__all__ = [
    "create_minibatch",
    "create_n_fewshot_demo_sets",
    "dump_demo_sets",
    "eval_candidate_program",
    "get_program_with_highest_avg_score",
    "load_demo_sets",
    "save_candidate_program",
]

logger = logging.getLogger(__name__)


def create_minibatch(trainset: list[Any], batch_size: int = 50, rng: Any = None) -> list[Any]:
    """``batch_size`` examples drawn without replacement with ``rng`` (DSPy's draw)."""
    batch_size = min(batch_size, len(trainset))
    indices = (rng or random).sample(range(len(trainset)), batch_size)
    return [trainset[i] for i in indices]


def eval_candidate_program(
    batch_size: int, trainset: list[Any], candidate_program: Any, evaluate: Any, rng: Any = None
) -> Any:
    """Score on the whole set, or on a minibatch drawn with ``rng``; a failed run scores 0.0."""
    try:
        if batch_size >= len(trainset):
            return evaluate(
                candidate_program, devset=trainset, callback_metadata={"metric_key": "eval_full"}
            )
        return evaluate(
            candidate_program,
            devset=create_minibatch(trainset, batch_size, rng),
            callback_metadata={"metric_key": "eval_minibatch"},
        )
    except Exception:
        logger.error("An exception occurred during evaluation", exc_info=True)
        return Prediction(score=0.0, results=[])


def get_program_with_highest_avg_score(
    param_score_dict: Mapping[str, list[tuple[float, Any, dict[str, int]]]],
    fully_evaled_param_combos: Mapping[str, Any],
) -> tuple[Any, float, str, dict[str, int]]:
    """The not yet fully evaluated combination with the best mean minibatch score."""
    results = []
    for key, values in param_score_dict.items():
        scores = [v[0] for v in values]
        results.append((key, sum(scores) / len(scores), values[0][1], values[0][2]))
    for key, mean, program, params in sorted(results, key=lambda x: x[1], reverse=True):
        if key not in fully_evaled_param_combos:
            return program, mean, key, params
    raise ValueError("No valid program found in param_score_dict")


def save_candidate_program(
    program: Any, log_dir: str | None, trial_num: int, note: str | None = None
) -> str | None:
    """Save ``program`` under ``log_dir/evaluated_programs`` (nothing without a ``log_dir``)."""
    if log_dir is None:
        return None
    folder = os.path.join(log_dir, "evaluated_programs")
    os.makedirs(folder, exist_ok=True)
    name = f"program_{trial_num}_{note}.json" if note else f"program_{trial_num}.json"
    path = os.path.join(folder, name)
    program.save(path)
    return path


@dataclass
class _DemoSet:
    """How one candidate demo set is made: ``kind`` and, for a bootstrap, its inputs."""

    kind: str  # "zeroshot" | "labeled" | "bootstrap"
    trainset: list[Any]
    max_bootstrapped_demos: int = 0


def create_n_fewshot_demo_sets(
    student: Any,
    num_candidate_sets: int,
    trainset: list[Any],
    max_labeled_demos: int,
    max_bootstrapped_demos: int,
    metric: Callable[..., Any] | None,
    teacher_settings: Mapping[str, Any] | None,
    max_errors: int | None = None,
    max_rounds: int = 1,
    labeled_sample: bool = True,
    min_num_samples: int = 1,
    metric_threshold: float | None = None,
    teacher: Any = None,
    include_non_bootstrapped: bool = True,
    seed: int = 0,
    rng: Any = None,
    *,
    num_threads: int | None = None,
    budget: CallBudget | None = None,
) -> dict[int, list[list[Any]]]:
    """``num_candidate_sets`` demo sets per predictor (DSPy's seeds ``-3 .. n-4``).

    DSPex only: ``num_threads`` bounds the program runs of all bootstraps together;
    ``budget`` (a spent ``CallBudget``) stops before the next demo set.
    """
    return run_sync(
        acreate_n_fewshot_demo_sets(
            student,
            num_candidate_sets,
            trainset,
            max_labeled_demos,
            max_bootstrapped_demos,
            metric,
            teacher_settings,
            max_errors=max_errors,
            max_rounds=max_rounds,
            labeled_sample=labeled_sample,
            min_num_samples=min_num_samples,
            metric_threshold=metric_threshold,
            teacher=teacher,
            include_non_bootstrapped=include_non_bootstrapped,
            seed=seed,
            rng=rng,
            num_threads=num_threads,
            budget=budget,
        )
    )


def _plan(
    num_sets: int,
    trainset: list[Any],
    max_labeled_demos: int,
    max_bootstrapped_demos: int,
    min_num_samples: int,
    include_non_bootstrapped: bool,
    rng: Any,
) -> list[_DemoSet]:
    """Every demo set's recipe, drawing from ``rng`` in DSPy's order (no LM call)."""
    plan: list[_DemoSet] = []
    for set_seed in range(-3, num_sets - 3):
        data = list(trainset)
        if set_seed == -3 and include_non_bootstrapped:
            plan.append(_DemoSet("zeroshot", data))
        elif set_seed == -2 and max_labeled_demos > 0 and include_non_bootstrapped:
            plan.append(_DemoSet("labeled", data))
        elif set_seed == -1:
            plan.append(_DemoSet("bootstrap", data, max_bootstrapped_demos))
        else:
            rng.shuffle(data)
            size = rng.randint(min_num_samples, max_bootstrapped_demos)
            plan.append(_DemoSet("bootstrap", data, size))
    return plan


async def acreate_n_fewshot_demo_sets(
    student: Any,
    num_candidate_sets: int,
    trainset: list[Any],
    max_labeled_demos: int,
    max_bootstrapped_demos: int,
    metric: Callable[..., Any] | None,
    teacher_settings: Mapping[str, Any] | None,
    max_errors: int | None = None,
    max_rounds: int = 1,
    labeled_sample: bool = True,
    min_num_samples: int = 1,
    metric_threshold: float | None = None,
    teacher: Any = None,
    include_non_bootstrapped: bool = True,
    seed: int = 0,
    rng: Any = None,
    *,
    num_threads: int | None = None,
    budget: CallBudget | None = None,
    limiter: asyncio.Semaphore | None = None,
) -> dict[int, list[list[Any]]]:
    """``create_n_fewshot_demo_sets`` for async callers; ``limiter``: the bound on program
    runs, shared with other work running at the same time (else one of ``num_threads``)."""
    errors = default_max_errors() if max_errors is None else max_errors
    plan = _plan(
        num_candidate_sets,
        trainset,
        max_labeled_demos,
        max_bootstrapped_demos,
        min_num_samples,
        include_non_bootstrapped,
        rng or random.Random(seed),
    )
    threads = num_threads or default_threads()
    limiter = limiter if limiter is not None else asyncio.Semaphore(threads)
    build = _SetBuilder(
        student,
        max_labeled_demos,
        metric,
        teacher_settings,
        errors,
        max_rounds,
        labeled_sample,
        metric_threshold,
        teacher,
        num_threads,
    )

    programs: list[Any] = []
    unlimited = budget is None or (budget.max_lm_calls is None and budget.max_cost is None)
    if threads > 1 and unlimited:
        async with asyncio.TaskGroup() as group:  # one failure cancels the other bootstraps
            tasks = [group.create_task(build(recipe, limiter)) for recipe in plan]
        programs = [task.result() for task in tasks]
    else:
        for index, recipe in enumerate(plan):
            if budget is not None and budget.spent and programs:
                logger.warning("Stopping after %d demo sets: %s spent", index, budget.stopped_by)
                break
            logger.info("Bootstrapping set %d/%d", index + 1, len(plan))
            programs.append(await build(recipe, None))
    return demo_candidates_of(student, programs)


def demo_candidates_of(student: Any, programs: list[Any]) -> dict[int, list[list[Any]]]:
    """The demo sets per predictor of ``student``, from the programs built for them."""
    demo_candidates: dict[int, list[list[Any]]] = {i: [] for i in range(len(student.predictors()))}
    for program in programs:
        for i, predictor in enumerate(program.predictors()):
            demo_candidates[i].append(predictor.demos)
    return demo_candidates


def start_n_fewshot_demo_sets(
    student: Any,
    num_candidate_sets: int,
    trainset: list[Any],
    max_labeled_demos: int,
    max_bootstrapped_demos: int,
    metric: Callable[..., Any] | None,
    teacher_settings: Mapping[str, Any] | None,
    *,
    max_errors: int | None,
    metric_threshold: float | None,
    teacher: Any,
    rng: Any,
    num_threads: int | None,
    limiter: asyncio.Semaphore,
) -> list[asyncio.Task[Any]]:
    """DSPex only: :func:`acreate_n_fewshot_demo_sets` started, not awaited. Every set's
    recipe is drawn from ``rng`` before this returns (DSPy's draws, in its order), so the
    caller's next draws follow them as in DSPy; each set is then built in its own task (on
    the running loop, under ``limiter``), whose result is the program holding that set's
    demos (:func:`demo_candidates_of` makes the sets of them). The caller awaits or cancels
    the tasks."""
    plan = _plan(
        num_candidate_sets, trainset, max_labeled_demos, max_bootstrapped_demos, 1, True, rng
    )
    build = _SetBuilder(
        student,
        max_labeled_demos,
        metric,
        teacher_settings,
        default_max_errors() if max_errors is None else max_errors,
        1,
        True,
        metric_threshold,
        teacher,
        num_threads,
    )
    return [asyncio.ensure_future(build(recipe, limiter)) for recipe in plan]


class _SetBuilder:
    """Builds one planned demo set: the program whose predictors hold its demos."""

    def __init__(
        self,
        student: Any,
        max_labeled_demos: int,
        metric: Callable[..., Any] | None,
        teacher_settings: Mapping[str, Any] | None,
        max_errors: int,
        max_rounds: int,
        labeled_sample: bool,
        metric_threshold: float | None,
        teacher: Any,
        num_threads: int | None,
    ) -> None:
        self.student = student
        self.max_labeled_demos = max_labeled_demos
        self.metric = metric
        self.teacher_settings = teacher_settings
        self.max_errors = max_errors
        self.max_rounds = max_rounds
        self.labeled_sample = labeled_sample
        self.metric_threshold = metric_threshold
        self.teacher = teacher
        self.num_threads = num_threads

    async def __call__(self, recipe: _DemoSet, limiter: asyncio.Semaphore | None) -> Any:
        """``limiter``: the bound shared with other work (``None``: the bootstrap's own)."""
        if recipe.kind == "zeroshot":
            return self.student.reset_copy()
        if recipe.kind == "labeled":
            labeled = LabeledFewShot(k=self.max_labeled_demos)
            return labeled.compile(
                self.student, trainset=recipe.trainset, sample=self.labeled_sample
            )
        optimizer = BootstrapFewShot(
            metric=self.metric,
            max_errors=self.max_errors,
            metric_threshold=self.metric_threshold,
            max_bootstrapped_demos=recipe.max_bootstrapped_demos,
            max_labeled_demos=self.max_labeled_demos,
            teacher_settings=self.teacher_settings,
            max_rounds=self.max_rounds,
            num_threads=self.num_threads,
        )
        optimizer._run_ahead = False  # the demo sets' calls stay DSPy's
        if limiter is not None:
            optimizer._limiter = limiter
        return await optimizer.acompile(
            self.student, teacher=self.teacher, trainset=recipe.trainset
        )


def dump_demo_sets(sets: Mapping[int, list[list[Any]]]) -> list[list[list[dict[str, Any]]]]:
    """Demo candidates as JSON (per predictor, per set, per demo: its fields and input keys)."""

    def one(demo: Any) -> dict[str, Any]:
        if isinstance(demo, Example):
            keys = demo._input_keys
            return {
                "fields": serialize_object(demo.toDict()),
                "inputs": sorted(keys) if keys is not None else None,
            }
        return {"fields": serialize_object(dict(demo)), "dict": True}

    return [[[one(demo) for demo in demos] for demos in sets[i]] for i in range(len(sets))]


def load_demo_sets(saved: list[list[list[dict[str, Any]]]]) -> dict[int, list[list[Any]]]:
    """:func:`dump_demo_sets` read back (examples as examples, dicts as dicts)."""

    def one(demo: dict[str, Any]) -> Any:
        if demo.get("dict"):
            return dict(demo["fields"])
        example = Example(**demo["fields"])
        return example.with_inputs(*demo["inputs"]) if demo["inputs"] is not None else example

    return {i: [[one(d) for d in demos] for demos in sets] for i, sets in enumerate(saved)}
