"""SIMBA's building blocks, as DSPy 3.4.1 names them (``dspy.teleprompt.simba_utils``).

* :func:`prepare_models_for_resampling`: the LMs of one trajectory-sampling round, copies of
  the program's LM at temperature 1.0 with consecutive ``rollout_id`` values (the teacher LM
  first when ``teacher_settings`` are given).
* :func:`wrap_program`: a program run as SIMBA scores it (prediction, trace, metric score and
  the metric's extra fields), never raising.
* The strategies that turn a bucket of runs into a new candidate: :func:`append_a_demo`
  (the best run's trace becomes one demo per predictor) and :data:`append_a_rule` (the
  prompt model contrasts the best and worst runs, DSPy's ``OfferFeedback`` prompt, and its
  advice is appended to each predictor's instructions).

Each callable has a sync ``__call__`` (DSPy's form) and an async ``acall``; both share every
decision and differ only in how the LM is awaited.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import orjson

from dspex import settings
from dspex.errors import OptimizerError
from dspex.modules.refine import inspect_modules, recursive_mask
from dspex.primitives.example import Example
from dspex.primitives.prediction import Prediction
from dspex.signatures import InputField, OutputField, Signature

__all__ = [
    "OfferFeedback",
    "Strategy",
    "WrappedProgram",
    "append_a_demo",
    "append_a_rule",
    "inspect_modules",
    "prepare_models_for_resampling",
    "recursive_mask",
    "wrap_program",
]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------- LMs
def prepare_models_for_resampling(
    program: Any, n: int, teacher_settings: dict[str, Any] | None = None
) -> list[Any]:
    """``n`` LMs for one sampling round: the teacher's (if any), then copies of the
    program's LM with ``temperature=1.0`` and the next ``rollout_id`` values (DSPy's rule,
    including that the teacher LM's ``rollout_id`` is set in place)."""
    lm = program.get_lm() or settings.current().lm
    if lm is None or not hasattr(lm, "copy"):
        raise OptimizerError(
            "SIMBA needs an LM with copy(): configure one (dspex.configure(lm=...)) "
            "or set one on the program"
        )
    start = lm.kwargs.get("rollout_id", 0)
    rollout_ids = [start + i for i in range(n)]
    models: list[Any] = []
    if teacher_settings:
        teacher_lm = teacher_settings.get("lm") or lm
        teacher_lm.kwargs["rollout_id"] = rollout_ids[0]
        models.append(teacher_lm)
    models.extend(lm.copy(rollout_id=r, temperature=1.0) for r in rollout_ids[len(models) :])
    return models


# ---------------------------------------------------------------------------------- runs
class WrappedProgram:
    """``program`` run on one example the way SIMBA scores it: a dict with ``prediction``,
    ``trace``, ``score``, ``example`` and ``output_metadata``; errors are logged, scored 0."""

    def __init__(self, program: Any, metric: Callable[..., Any]) -> None:
        self.program = program
        self.metric = metric

    def __call__(self, example: Any) -> dict[str, Any]:
        trace: list[Any] = []
        prediction: Any = None
        with settings.context(trace=trace):
            try:
                prediction = self.program(**example.inputs())
            except Exception as exc:
                logger.warning(exc)
        return self._score(example, prediction, list(trace), self._measure(example, prediction))

    async def acall(self, example: Any, executor: Executor | None = None) -> dict[str, Any]:
        """The async form. A program with only a sync ``forward`` runs, with the metric, in
        one hop to a worker thread (``executor``, default: asyncio's); otherwise the program
        is awaited and the metric runs in a worker thread."""
        loop = asyncio.get_running_loop()
        if _sync_only(self.program):
            call = functools.partial(contextvars.copy_context().run, self.__call__, example)
            return await loop.run_in_executor(executor, call)
        trace: list[Any] = []
        prediction: Any = None
        with settings.context(trace=trace):
            try:
                prediction = await self.program.acall(**example.inputs())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning(exc)
        measure = functools.partial(
            contextvars.copy_context().run, self._measure, example, prediction
        )
        outcome = await loop.run_in_executor(executor, measure)
        return self._score(example, prediction, list(trace), outcome)

    def _measure(self, example: Any, prediction: Any) -> tuple[Any, BaseException | None]:
        try:
            return self.metric(example, prediction), None
        except Exception as exc:
            return None, exc

    @staticmethod
    def _score(
        example: Any,
        prediction: Any,
        trace: list[Any],
        outcome: tuple[Any, BaseException | None],
    ) -> dict[str, Any]:
        output, error = outcome
        score: Any = 0.0
        metadata: dict[str, Any] = {}
        if error is not None:
            logger.warning(error)
        elif isinstance(output, int | float):
            score = output
        elif isinstance(output, Prediction):
            if not hasattr(output, "score"):
                logger.warning(
                    "When `metric` returns a `dspy.Prediction`, it must contain a `score` field."
                )
            else:
                score = output.score
                metadata = {k: v for k, v in output.items() if k != "score"}
        return {
            "prediction": prediction,
            "trace": trace,
            "score": score,
            "example": example,
            "output_metadata": metadata,
        }


def _sync_only(program: Any) -> bool:
    """A program to call, not await: no ``acall``, or a module whose only forward is sync
    (its ``acall`` would run it in a worker thread anyway)."""
    from dspex.primitives.module import Module

    if not hasattr(program, "acall"):
        return True
    return (
        isinstance(program, Module)
        and program._has_sync_forward()
        and not program._has_async_forward()
    )


def wrap_program(program: Any, metric: Callable[..., Any]) -> WrappedProgram:
    """``program`` as SIMBA runs it: ``wrapped(example)`` (or ``await wrapped.acall(example)``)."""
    return WrappedProgram(program, metric)


# ---------------------------------------------------------------------------------- strategies
class Strategy:
    """A way to build a candidate from a bucket: ``strategy(bucket, system, **kwargs)``
    changes ``system`` in place and returns whether it did (``acall`` for async callers)."""

    __name__: str

    def __call__(self, bucket: list[dict[str, Any]], system: Any, **kwargs: Any) -> bool:
        raise NotImplementedError

    async def acall(self, bucket: list[dict[str, Any]], system: Any, **kwargs: Any) -> bool:
        return self(bucket, system, **kwargs)


class _AppendADemo(Strategy):
    def __init__(self, demo_input_field_maxlen: int) -> None:
        self.__name__ = "append_a_demo_"
        self.demo_input_field_maxlen = demo_input_field_maxlen

    def __call__(self, bucket: list[dict[str, Any]], system: Any, **kwargs: Any) -> bool:
        predictor2name, name2predictor = kwargs["predictor2name"], kwargs["name2predictor"]
        good = bucket[0]
        if good["score"] <= kwargs["batch_10p_score"]:
            logger.info(
                "Skipping appending a demo as good score %s is at or below the 10th percentile.",
                good["score"],
            )
            return False
        maxlen = self.demo_input_field_maxlen
        name2demo: dict[str, Example] = {}
        for predictor, inputs, outputs in good["trace"]:
            for key, value in inputs.items():
                if maxlen and len(str(value)) > maxlen:
                    inputs[key] = f"{str(value)[:maxlen]}\n\t\t... <TRUNCATED FOR BREVITY>"
            demo = Example(augmented=True, **inputs, **outputs)
            name = predictor2name.get(id(predictor))
            if name is not None:
                name2demo[name] = demo  # the last call of each predictor wins
        for name, demo in name2demo.items():
            name2predictor[name].demos.append(demo)
        logger.info("Added %d demos (one each) across all predictors.", len(name2demo))
        return True


def append_a_demo(demo_input_field_maxlen: int) -> Strategy:
    """The strategy that adds the best run's trace as one demo per predictor (inputs longer
    than ``demo_input_field_maxlen`` characters are truncated)."""
    return _AppendADemo(demo_input_field_maxlen)


class _AppendARule(Strategy):
    def __init__(self) -> None:
        self.__name__ = "append_a_rule"

    def __call__(self, bucket: list[dict[str, Any]], system: Any, **kwargs: Any) -> bool:
        request = self._request(bucket, system, kwargs)
        if request is None:
            return False
        lm, inputs = request
        from dspex.modules.predict import Predict

        with settings.context(trace=[], lm=lm):
            advice = Predict(OfferFeedback)(**inputs).module_advice
        self._apply(system, advice)
        return True

    async def acall(self, bucket: list[dict[str, Any]], system: Any, **kwargs: Any) -> bool:
        request = self._request(bucket, system, kwargs)
        if request is None:
            return False
        lm, inputs = request
        from dspex.modules.predict import Predict

        with settings.context(trace=[], lm=lm):
            advice = (await Predict(OfferFeedback).acall(**inputs)).module_advice
        self._apply(system, advice)
        return True

    @staticmethod
    def _request(
        bucket: list[dict[str, Any]], system: Any, kwargs: dict[str, Any]
    ) -> tuple[Any, dict[str, str]] | None:
        """The prompt model and the ``OfferFeedback`` inputs; ``None`` when the bucket's
        best and worst runs are not far enough apart (DSPy's percentile rule)."""
        predictor2name = kwargs["predictor2name"]
        p10, p90 = kwargs["batch_10p_score"], kwargs["batch_90p_score"]
        prompt_model = kwargs["prompt_model"] or settings.current().lm
        module_names = [name for name, _ in system.named_predictors()]
        good, bad = bucket[0], bucket[-1]
        example = good["example"]
        if good["score"] <= p10 or bad["score"] >= p90:
            logger.info(
                "Skipping rule generation as good score %s is at or below the 10th percentile "
                "*or* bad score %s is at or above the 90th percentile.",
                good["score"],
                bad["score"],
            )
            return None
        if good["score"] <= bad["score"]:
            blank = bad if good["score"] > p90 else good
            blank["trace"] = []
            blank["score"] = "N/A"
            blank["prediction"] = {"N/A": "Prediction not available"}

        def trajectory(run: dict[str, Any]) -> list[dict[str, Any]]:
            return [
                {"module_name": predictor2name[id(p)], "inputs": i, "outputs": dict(o)}
                for p, i, o in run["trace"]
                if id(p) in predictor2name
            ]

        raw: dict[str, Any] = {
            "program_code": _source(system.__class__),
            "modules_defn": inspect_modules(system),
            "program_inputs": {**example.inputs()},
            "oracle_metadata": {**example.labels()},
            "better_program_trajectory": trajectory(good),
            "better_program_outputs": dict(good["prediction"]),
            "worse_program_trajectory": trajectory(bad),
            "worse_program_outputs": dict(bad["prediction"] or {}),
            "worse_reward_value": bad["score"],
            "better_reward_value": good["score"],
            "worse_reward_info": bad["output_metadata"],
            "better_reward_info": good["output_metadata"],
            "module_names": module_names,
        }
        inputs = {k: v if isinstance(v, str) else _dumps(v) for k, v in raw.items()}
        return prompt_model, inputs

    @staticmethod
    def _apply(system: Any, advice: Any) -> None:
        for name, predictor in system.named_predictors():
            if name in advice:
                logger.info("Advice for %s: %s", name, advice[name])
                instructions = predictor.signature.instructions + "\n\n" + advice[name]
                predictor.signature = predictor.signature.with_instructions(instructions)


append_a_rule: Strategy = _AppendARule()
"""The strategy that asks the prompt model for one rule per predictor (``OfferFeedback``)."""


# ---------------------------------------------------------------------------------- prompt
class OfferFeedback(Signature):
    """
    You will be given two trajectories of an LLM-driven program's execution. Your goal is to help the program's modules
    build up experience on how to maximize the reward value assigned to the program's outputs if it were to receive
    similar inputs in the future.

    The module won't see its own history. It will rely on your advice balancing being concrete and being generalizable.

    In your advice:
    - Avoid boilerplate. Offer advice that would change the module's behavior for the better in the future.
    - Ensure that advice offered to a module M is specific to that M's specific sub-task, not the overall program.
    - Rely on contrasting the behavior of the worse trajectory against the better trajectory in making recommendations.
    - Ensure each unique module name appears exactly once as a key in the advice dictionary.
    """

    program_code: str = InputField(desc="The code of the program that we are analyzing")
    modules_defn: str = InputField(
        desc="The definition of each module in the program, including its I/O"
    )
    program_inputs: str = InputField(desc="The inputs to the program that we are analyzing")
    oracle_metadata: str = InputField(
        desc="Any (hidden) metadata about the training set instance we're analyzing"
    )
    worse_program_trajectory: str = InputField(
        desc="The trajectory of the program's execution, showing each module's I/O"
    )
    worse_program_outputs: str = InputField(desc="The outputs of the program that we are analyzing")
    worse_reward_value: float = InputField(
        desc="The reward value assigned to the program's outputs"
    )
    worse_reward_info: str = InputField(
        desc="Additional information that might be helpful to understanding the assigned "
        "reward value."
    )
    better_program_trajectory: str = InputField(
        desc="The trajectory of the program's execution, showing each module's I/O"
    )
    better_program_outputs: str = InputField(
        desc="The outputs of the program that we are analyzing"
    )
    better_reward_value: float = InputField(
        desc="The reward value assigned to the program's outputs"
    )
    better_reward_info: str = InputField(
        desc="Additional information that might be helpful to understanding the assigned "
        "reward value."
    )
    module_names: list[str] = InputField(
        desc="The names of the modules in the program, for which we seek advice"
    )
    discussion: str = OutputField(
        desc="Discussing blame of where each module went wrong, if it did"
    )
    module_advice: dict[str, str] = OutputField(
        desc="For each module, describe very concretely: If the module receives ${description "
        "of input or patterns therein}, then it should ${description of content, behavior, or "
        "strategies to adopt and/or others to avoid}. Basically, your advice be such that if "
        "the module has access to your tip, it would be much more likely to act like the "
        "successful trajectory rather than the lower-scoring trajectory."
    )


@functools.lru_cache(maxsize=64)
def _source(cls: type) -> str:
    """The source of ``cls`` (read once per class: ``inspect`` parses the whole file)."""
    return inspect.getsource(cls)


def _dumps(value: Any) -> str:
    return orjson.dumps(recursive_mask(value), option=orjson.OPT_INDENT_2).decode()
