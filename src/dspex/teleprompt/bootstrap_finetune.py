"""``BootstrapFinetune``: fine-tune each predictor's LM on the program's own successful traces.

DSPy 3.4.1's optimizer (``dspy.teleprompt.bootstrap_finetune``), native, on user modules in the
user's process:

1. the teacher (default: the student) runs on the trainset under
   :func:`~dspex.teleprompt.bootstrap_trace.bootstrap_trace_data`, keeping every predictor call;
2. per training key ``(lm, predictor index or None when multitask)`` the traces become chat
   fine-tuning records (the adapter's messages for the call plus the assistant reply); with a
   metric only examples it passed are kept; records are shuffled with ``Random(0)``;
3. each LM is killed, fine-tuned with ``lm.finetune(...)`` (its provider's job) and the student's
   predictors get the fine-tuned LMs (demos cleared with ``exclude_demos``).

The records are byte-for-byte DSPy's for the same traces (``tests/teleprompt/
test_bootstrap_finetune_parity.py``). The module also keeps DSPy's helpers that BetterTogether and
other code import from here (``prepare_student``, ``launch_lms``, ``kill_lms``...).
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from dspex import settings
from dspex.errors import ConfigurationError, OptimizerError
from dspex.lm.base import BaseLM
from dspex.teleprompt.bootstrap_trace import bootstrap_trace_data
from dspex.teleprompt.teleprompt import Teleprompter

__all__ = [
    "BootstrapFinetune",
    "FinetuneTeleprompter",
    "all_predictors_have_lms",
    "assert_all_predictors_have_lms",
    "assert_no_shared_predictor",
    "assert_structural_equivalency",
    "bootstrap_trace_data",
    "build_call_data_from_trace",
    "copy_program_with_lms",
    "format_finetune_data",
    "get_unique_lms",
    "kill_lms",
    "launch_lms",
    "prepare_student",
    "prepare_teacher",
]

logger = logging.getLogger(__name__)


class FinetuneTeleprompter(Teleprompter):
    """An optimizer that trains LMs: ``train_kwargs`` for all LMs, or per LM."""

    def __init__(self, train_kwargs: dict[str, Any] | dict[Any, dict[str, Any]] | None = None):
        self.train_kwargs: dict[Any, Any] = self.convert_to_lm_dict(train_kwargs or {})

    @staticmethod
    def convert_to_lm_dict(arg: Any) -> dict[Any, Any]:
        """``arg`` itself when it maps LMs to values, else one value for every LM."""
        if arg and isinstance(arg, dict) and all(isinstance(k, BaseLM) for k in arg):
            return arg
        return defaultdict(lambda: arg)


class BootstrapFinetune(FinetuneTeleprompter):
    """Fine-tune the student's LMs on its (or a teacher's) traces (DSPy 3.4.1's arguments)."""

    def __init__(
        self,
        metric: Callable[..., Any] | None = None,
        multitask: bool = True,
        train_kwargs: dict[str, Any] | dict[Any, dict[str, Any]] | None = None,
        adapter: Any = None,
        exclude_demos: bool = False,
        num_threads: int | None = None,
    ):
        super().__init__(train_kwargs=train_kwargs)
        self.metric = metric
        self.multitask = multitask
        self.adapter: dict[Any, Any] = self.convert_to_lm_dict(adapter)
        self.exclude_demos = exclude_demos
        self.num_threads = num_threads

    def compile(self, student: Any, trainset: list[Any], teacher: Any = None) -> Any:  # type: ignore[override]
        logger.info("Preparing the student and teacher programs...")
        all_predictors_have_lms(student)  # DSPy checks here and reports a missing LM below

        logger.info("Bootstrapping data...")
        teachers = teacher if isinstance(teacher, list) else [teacher]
        teachers = [prepare_teacher(student, t) for t in teachers]
        num_threads = self.num_threads or settings.current().num_threads
        trace_data: list[Any] = []
        for program in teachers:
            trace_data += bootstrap_trace_data(
                program=program, dataset=trainset, metric=self.metric, num_threads=num_threads
            )

        logger.info("Preparing the train data...")
        key_to_data = self._finetune_requests(student, trace_data)

        if len(key_to_data) > num_threads:
            raise ConfigurationError(
                "BootstrapFinetune requires `num_threads` to be bigger than or equal to the "
                f"number of fine-tuning jobs. There are {len(key_to_data)} fine-tuning jobs to "
                f"start, but the number of threads is: {num_threads}! With multitask=False there "
                "is one job per predictor; with multitask=True one per distinct LM."
            )
        logger.info("%d fine-tuning job(s) to start", len(key_to_data))
        key_to_lm = self.finetune_lms(key_to_data)

        logger.info("Updating the student program with the fine-tuned LMs...")
        for pred_ind, pred in enumerate(student.predictors()):
            finetuned = key_to_lm[(pred.lm, None if self.multitask else pred_ind)]
            if isinstance(finetuned, Exception):
                raise RuntimeError(f"Finetuned LM for predictor {pred_ind} failed.") from finetuned
            pred.lm = finetuned
            pred.demos = [] if self.exclude_demos else pred.demos

        logger.info("BootstrapFinetune has finished compiling the student program")
        student._compiled = True
        return student

    def _finetune_requests(
        self, student: Any, trace_data: list[Any]
    ) -> dict[tuple[Any, int | None], dict[str, Any]]:
        """One ``lm.finetune`` request per ``(lm, predictor index or None)``."""
        key_to_data: dict[tuple[Any, int | None], dict[str, Any]] = {}
        for pred_ind, pred in enumerate(student.predictors()):
            data_pred_ind = None if self.multitask else pred_ind
            if pred.lm is None:
                raise ConfigurationError(
                    f"Predictor {pred_ind} does not have an LM assigned. Please ensure the "
                    "module's predictors have their LM set before fine-tuning. You can set it "
                    "using: your_module.set_lm(your_lm)"
                )
            key = (pred.lm, data_pred_ind)
            if key in key_to_data:
                continue
            train_data, data_format = self._prepare_finetune_data(
                trace_data=trace_data, lm=pred.lm, pred_ind=data_pred_ind
            )
            logger.info(
                "Using %d data points for fine-tuning the model: %s",
                len(train_data),
                getattr(pred.lm, "model", pred.lm),
            )
            key_to_data[key] = {
                "lm": pred.lm,
                "train_data": train_data,
                "train_data_format": data_format,
                "train_kwargs": self.train_kwargs[pred.lm],
            }
        return key_to_data

    @staticmethod
    def finetune_lms(finetune_dict: dict[Any, dict[str, Any]]) -> dict[Any, Any]:
        """Start every job (each LM killed first), then wait for all; a failure raises."""
        logger.info("Starting %d fine-tuning job(s)...", len(finetune_dict))
        key_to_job = {}
        for key, finetune_kwargs in finetune_dict.items():
            kwargs = dict(finetune_kwargs)
            lm = kwargs.pop("lm")
            _call_lifecycle(lm, "kill")
            finetune = getattr(lm, "finetune", None)
            if finetune is None:
                raise ConfigurationError(
                    f"{type(lm).__name__} cannot be fine-tuned (it has no finetune method); "
                    "use dspex.LM with a fine-tuning provider"
                )
            key_to_job[key] = finetune(**kwargs)

        key_to_lm = {}
        for index, (key, job) in enumerate(key_to_job.items()):
            result = job.result()
            if isinstance(result, Exception):
                raise result
            key_to_lm[key] = result
            if job.thread is not None:
                job.thread.join()
            logger.info("Job %d/%d is done", index + 1, len(key_to_job))
        return key_to_lm

    def _prepare_finetune_data(
        self, trace_data: list[Any], lm: Any, pred_ind: int | None = None
    ) -> tuple[list[Any], Any]:
        """The records for ``lm`` (one predictor's calls, or all with ``pred_ind=None``)."""
        from dspex.adapters import ChatAdapter
        from dspex.clients.utils_finetune import infer_data_format

        if self.metric:
            logger.info("Collected data for %d examples", len(trace_data))
            trace_data = [d for d in trace_data if d["score"]]
            logger.info("After filtering with the metric, %d examples remain", len(trace_data))

        adapter = self.adapter[lm] or settings.current().adapter or ChatAdapter()
        data_format = infer_data_format(adapter)
        data = []
        for item in trace_data:
            for trace_pred_ind, _ in enumerate(item["trace"]):
                if pred_ind is None or trace_pred_ind == pred_ind:
                    data.append(
                        build_call_data_from_trace(
                            trace=item["trace"],
                            pred_ind=trace_pred_ind,
                            adapter=adapter,
                            exclude_demos=self.exclude_demos,
                        )
                    )
        random.Random(0).shuffle(data)
        return data, data_format


def format_finetune_data(
    adapter: Any, signature: Any, demos: list[Any], inputs: dict[str, Any], outputs: Any
) -> dict[str, list[dict[str, Any]]]:
    """A chat fine-tuning record: the adapter's messages for the call, then the reply
    (DSPy's ``ChatAdapter.format_finetune_data``; an adapter's own method wins)."""
    own = getattr(adapter, "format_finetune_data", None)
    if callable(own):
        result: dict[str, list[dict[str, Any]]] = own(
            signature=signature, demos=demos, inputs=inputs, outputs=outputs
        )
        return result
    messages = list(adapter.format(signature=signature, demos=demos, inputs=inputs))
    reply = adapter.format_assistant_message_content(signature=signature, outputs=outputs)
    return {"messages": [*messages, {"role": "assistant", "content": reply}]}


def build_call_data_from_trace(
    trace: list[Any], pred_ind: int, adapter: Any, exclude_demos: bool = False
) -> dict[str, list[dict[str, Any]]]:
    """The record of the ``pred_ind``-th call in ``trace``."""
    pred, inputs, outputs = trace[pred_ind]
    demos = [] if exclude_demos else pred.demos
    return format_finetune_data(adapter, pred.signature, demos, inputs, outputs)


def all_predictors_have_lms(program: Any) -> bool:
    """Whether every predictor of ``program`` has an LM set."""
    return all(pred.lm for pred in program.predictors())


def assert_all_predictors_have_lms(program: Any, role: str = "program") -> None:
    """Raise (a ``ValueError``) naming the predictors without an LM."""
    missing = [name for name, pred in program.named_predictors() if not pred.lm]
    if missing:
        raise ConfigurationError(
            f"The {role} program must have a language model set on every predictor, but "
            f"these have none: {missing}. Assign an LM to them; `{role}.set_lm(lm)` sets every "
            "predictor and overwrites LMs that are already set."
        )


def copy_program_with_lms(program: Any) -> Any:
    """A deep copy of ``program`` whose predictors keep the original LM objects."""
    lms = [pred.lm for pred in program.predictors()]
    program = program.deepcopy()
    for pred, lm in zip(program.predictors(), lms, strict=True):
        pred.lm = lm
    return program


def prepare_student(student: Any) -> Any:
    if getattr(student, "_compiled", False):
        raise ConfigurationError("The student program should not be compiled.")
    return student


def prepare_teacher(student: Any, teacher: Any = None) -> Any:
    if teacher is None:
        return student
    assert_structural_equivalency(student, teacher)
    assert_no_shared_predictor(student, teacher)
    return teacher


def assert_structural_equivalency(program1: Any, program2: Any) -> None:
    """Same predictor names in the same order (an ``AssertionError``, as DSPy's)."""
    from dspex.modules.predict import Predict
    from dspex.primitives.module import Module

    if not isinstance(program1, Module) or not isinstance(program2, Module):
        raise OptimizerError("Structurally equivalent programs must both be Modules.")
    num1, num2 = len(program1.predictors()), len(program2.predictors())
    if num1 != num2:
        raise OptimizerError(
            "Structurally equivalent programs must have the same number of predictors. The "
            f"number of predictors for the two modules do not match: {num1} != {num2}"
        )
    pairs = zip(program1.named_predictors(), program2.named_predictors(), strict=True)
    for ind, ((name1, pred1), (name2, pred2)) in enumerate(pairs):
        if name1 != name2:
            raise OptimizerError(
                "Program predictor names must match at corresponding indices for structural "
                f"equivalency. The predictor names for the programs do not match at index "
                f"{ind}: '{name1}' != '{name2}'"
            )
        if not isinstance(pred1, Predict) or not isinstance(pred2, Predict):
            raise OptimizerError(f"predictor {name1!r} is not a Predict")


def assert_no_shared_predictor(program1: Any, program2: Any) -> None:
    names1 = {id(p): n for n, p in program1.named_predictors()}
    names2 = {id(p): n for n, p in program2.named_predictors()}
    shared = set(names1) & set(names2)
    if shared:
        listed = ", ".join(names1[i] for i in shared)
        raise OptimizerError(
            f"The programs share the following predictor(s) with each other: {listed}"
        )


def get_unique_lms(program: Any) -> list[Any]:
    return list({id(pred.lm): pred.lm for pred in program.predictors()}.values())


def launch_lms(program: Any) -> None:
    """``launch()`` every distinct LM of ``program`` (a no-op for hosted APIs)."""
    for lm in get_unique_lms(program):
        _call_lifecycle(lm, "launch")


def kill_lms(program: Any) -> None:
    """``kill()`` every distinct LM of ``program`` (a no-op for hosted APIs)."""
    for lm in get_unique_lms(program):
        _call_lifecycle(lm, "kill")


def _call_lifecycle(lm: Any, name: str) -> None:
    """``lm.launch()``/``lm.kill()``; an LM class without them (a plain BaseLM) has nothing
    to launch or kill."""
    method = getattr(lm, name, None)
    if callable(method):
        method()
