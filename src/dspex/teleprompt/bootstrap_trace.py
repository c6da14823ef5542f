"""``bootstrap_trace_data``: run a program on a dataset and keep each example's full trace.

DSPy 3.4.1's helper (``dspy.teleprompt.bootstrap_trace``), native: every example runs under its
own ``settings.context(trace=[])`` through :class:`~dspex.evaluate.Evaluate` (bounded
concurrency, the caller's order with ``num_threads=1``), and the result holds, per example,
the prediction, the ``(predictor, inputs, outputs)`` trace and the metric's score. GEPA reads its
reflective examples from it.

A completion the adapter cannot parse becomes a :class:`FailedPrediction` in the trace when
``capture_failed_parses`` (its raw text is what GEPA shows the reflection LM). As in DSPy 3.4.1,
only a completion with *no* parsable output field is captured that way; a partial parse is
dropped from the result like any other failed example.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

from dspex import settings
from dspex.errors import AdapterParseError, LMError
from dspex.primitives.example import Example
from dspex.primitives.prediction import Prediction

__all__ = ["FailedPrediction", "TraceData", "bootstrap_trace_data"]

logger = logging.getLogger(__name__)


@dataclass
class FailedPrediction:
    """An output the adapter could not parse: the raw completion and its format reward."""

    completion_text: str
    format_reward: float | None = None


class TraceData(TypedDict, total=False):
    example_ind: int
    example: Example
    prediction: Prediction | FailedPrediction
    trace: list[tuple[Any, dict[str, Any], Any]]
    score: Any


Traced = tuple[Any, list[tuple[Any, dict[str, Any], Any]]]


class _TracedProgram:
    """``program`` whose calls return ``(prediction, trace)``; sync and async share ``_settle``."""

    def __init__(
        self,
        program: Any,
        *,
        capture_failed_parses: bool,
        format_failure_score: float,
        capture_crashes: bool,
        log_format_failures: bool,
    ) -> None:
        self.program = program
        self.capture_failed_parses = capture_failed_parses
        self.format_failure_score = format_failure_score
        self.capture_crashes = capture_crashes
        self.log_format_failures = log_format_failures

    def named_predictors(self) -> list[tuple[str, Any]]:
        named = getattr(self.program, "named_predictors", None)
        return list(named()) if callable(named) else []

    def __call__(self, **kwargs: Any) -> Traced:
        trace: list[Any] = []
        with settings.context(trace=trace):
            try:
                return self.program(**kwargs), list(trace)
            except Exception as exc:
                return self._settle(exc, kwargs, trace)

    async def acall(self, **kwargs: Any) -> Traced:
        trace: list[Any] = []
        with settings.context(trace=trace):
            try:
                acall = getattr(self.program, "acall", None)
                prediction = await acall(**kwargs) if acall else self.program(**kwargs)
                return prediction, list(trace)
            except Exception as exc:
                return self._settle(exc, kwargs, trace)

    def _settle(self, exc: Exception, inputs: dict[str, Any], trace: list[Any]) -> Traced:
        """What a raised call becomes: a captured parse failure or crash, or the error."""
        if isinstance(exc, AdapterParseError) and self.capture_failed_parses:
            predictor = self._failed_predictor(exc)
            if predictor is not None and not exc.parsed_result:
                failed = FailedPrediction(
                    completion_text=str(exc.lm_response or ""),
                    format_reward=self.format_failure_score,
                )
                if self.log_format_failures:
                    logger.warning(
                        "Failed to parse output for example. This is likely due to the LLM "
                        "response not following the adapter's formatting."
                    )
                return failed, [*trace, (predictor, inputs, failed)]
            raise exc
        if isinstance(exc, LMError) or not self.capture_crashes:
            raise exc
        logger.warning(
            "Program raised on an example; capturing it as a failed prediction: %s: %s",
            type(exc).__name__,
            exc,
        )
        return FailedPrediction(completion_text=f"{type(exc).__name__}: {exc}"), list(trace)

    def _failed_predictor(self, exc: AdapterParseError) -> Any:
        """The predictor whose signature the failed parse was for (by the error's signature;
        by the expected output fields when the error does not carry it)."""
        predictors = [p for _, p in self.named_predictors()]
        failed = getattr(exc, "signature", None)
        if failed is not None:
            return next((p for p in predictors if p.signature.equals(failed)), None)
        expected = set(exc.fields.get("missing") or ()) | set(exc.parsed_result or {})
        return next((p for p in predictors if set(p.signature.output_fields) == expected), None)


def bootstrap_trace_data(
    program: Any,
    dataset: Sequence[Example],
    metric: Callable[..., Any] | None = None,
    num_threads: int | None = None,
    raise_on_error: bool = True,
    capture_failed_parses: bool = False,
    failure_score: float = 0,
    format_failure_score: float = -1,
    log_format_failures: bool = False,
    callback_metadata: dict[str, Any] | None = None,
    capture_crashes: bool = False,
) -> list[TraceData]:
    """One :class:`TraceData` per example that ran (``score`` only when ``metric`` is given)."""
    from dspex.evaluate import Evaluate

    if not dataset:
        return []
    traced = _TracedProgram(
        program,
        capture_failed_parses=capture_failed_parses,
        format_failure_score=format_failure_score,
        capture_crashes=capture_crashes,
        log_format_failures=log_format_failures,
    )

    def scored(example: Example, output: Any, trace: Any = None) -> Any:
        prediction, _ = output
        if isinstance(prediction, FailedPrediction):
            return prediction.format_reward or format_failure_score
        return metric(example, prediction, trace) if metric else True

    evaluator = Evaluate(
        devset=list(dataset),
        num_threads=num_threads,
        provide_traceback=False,
        max_errors=len(dataset) * 10,
        failure_score=failure_score,
    )
    results = evaluator(traced, metric=scored, callback_metadata=callback_metadata).results
    data: list[TraceData] = []
    for index, (example, output, score) in enumerate(results):
        if not isinstance(output, tuple) or len(output) != 2:
            # The program raised on this example (Evaluate gave it an empty prediction).
            logger.warning(
                "Failed to unpack prediction and trace. This is likely due to the LLM response "
                "not following dspy formatting."
            )
            if raise_on_error:
                raise ValueError(f"example {index}: the program failed and left no trace")
            continue
        prediction, trace = output
        item: TraceData = {
            "example": example,
            "prediction": prediction,
            "trace": trace,
            "example_ind": index,
        }
        if metric:
            item["score"] = score
        data.append(item)
    return data
