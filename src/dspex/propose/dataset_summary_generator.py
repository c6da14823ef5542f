"""The dataset summary of the grounded proposer (DSPy's prompts and call sequence).

The prompt model reads the trainset in batches of ``view_data_batch_size`` examples and writes
observations (at most 10 batches; five ``COMPLETE`` answers end early), then summarizes them
in two or three sentences.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from dspex import settings
from dspex._sync import run_sync
from dspex.modules.predict import Predict
from dspex.propose.utils import strip_prefix
from dspex.signatures import InputField, OutputField, Signature

__all__ = [
    "DatasetDescriptor",
    "DatasetDescriptorWithPriorObservations",
    "ObservationSummarizer",
    "acreate_dataset_summary",
    "create_dataset_summary",
    "order_input_keys_in_string",
]

logger = logging.getLogger(__name__)

_MAX_CALLS = 10
_MAX_SKIPS = 5


class ObservationSummarizer(Signature):
    """Given a series of observations I have made about my dataset, please summarize them into a brief 2-3 sentence summary which highlights only the most important details."""

    observations: str = InputField(desc="Observations I have made about my dataset")
    summary: str = OutputField(
        desc="Two to Three sentence summary of only the most significant highlights of my observations"
    )


class DatasetDescriptor(Signature):
    """Given several examples from a dataset please write observations about trends that hold for most or all of the samples. Some areas you may consider in your observations: topics, content, syntax, conciseness, etc. It will be useful to make an educated guess as to the nature of the task this dataset will enable. Don't be afraid to be creative"""

    examples: str = InputField(desc="Sample data points from the dataset")
    observations: str = OutputField(
        desc="Somethings that holds true for most or all of the data you observed"
    )


class DatasetDescriptorWithPriorObservations(Signature):
    """Given several examples from a dataset please write observations about trends that hold for most or all of the samples. I will also provide you with a few observations I have already made.  Please add your own observations or if you feel the observations are comprehensive say 'COMPLETE' Some areas you may consider in your observations: topics, content, syntax, conciceness, etc. It will be useful to make an educated guess as to the nature of the task this dataset will enable. Don't be afraid to be creative"""

    examples: str = InputField(desc="Sample data points from the dataset")
    prior_observations: str = InputField(desc="Some prior observations I made about the data")
    observations: str = OutputField(
        desc="Somethings that holds true for most or all of the data you observed or COMPLETE if you have nothing to add"
    )


_INPUT_KEYS = re.compile(r"input_keys=\{([^\}]+)\}")


def order_input_keys_in_string(unordered_repr: str) -> str:
    """Sort the names inside every ``input_keys={...}`` (a set prints in hash order)."""

    def reorder(match: re.Match[str]) -> str:
        keys = sorted(key.strip() for key in match.group(1).split(","))
        return f"input_keys={{{', '.join(keys)}}}"

    return _INPUT_KEYS.sub(reorder, unordered_repr)


async def _describe(
    signature: Any, prompt_model: Any, limiter: asyncio.Semaphore | None, **inputs: Any
) -> Any:
    with settings.context(lm=prompt_model):
        # DSPy asks for n=1, which its LM client does not send; ours would, so it is left out
        predict = Predict(signature, temperature=1.0)
        if limiter is None:
            return await predict.acall(**inputs)
        async with limiter:
            return await predict.acall(**inputs)


def create_dataset_summary(
    trainset: list[Any],
    view_data_batch_size: int,
    prompt_model: Any,
    log_file: Any = None,
    verbose: bool = False,
) -> str:
    """A 2-3 sentence summary of ``trainset`` written by ``prompt_model`` (or the configured LM)."""
    return run_sync(
        acreate_dataset_summary(trainset, view_data_batch_size, prompt_model, log_file, verbose)
    )


async def acreate_dataset_summary(
    trainset: list[Any],
    view_data_batch_size: int,
    prompt_model: Any,
    log_file: Any = None,
    verbose: bool = False,
    *,
    limiter: asyncio.Semaphore | None = None,
) -> str:
    """:func:`create_dataset_summary` for async callers (the same requests, one after the
    other); ``limiter``: each request waits for a slot of it (shared with other work)."""
    upper = min(len(trainset), view_data_batch_size)
    model = prompt_model if prompt_model else settings.current().lm
    first = await _describe(
        DatasetDescriptor,
        model,
        limiter,
        examples=order_input_keys_in_string(repr(trainset[0:upper])),
    )
    observations: str = first["observations"]
    if log_file:
        log_file.write("PRODUCING DATASET SUMMARY\n")
    skips = 0
    try:
        calls = 0
        for start in range(view_data_batch_size, len(trainset), view_data_batch_size):
            calls += 1
            if calls >= _MAX_CALLS:
                break
            upper = min(len(trainset), start + view_data_batch_size)
            output = await _describe(
                DatasetDescriptorWithPriorObservations,
                model,
                limiter,
                prior_observations=observations,
                examples=order_input_keys_in_string(repr(trainset[start:upper])),
            )
            text = output["observations"]
            if len(text) >= 8 and text[:8].upper() == "COMPLETE":
                skips += 1
                if skips >= _MAX_SKIPS:
                    break
                continue
            observations += text
            if log_file:
                log_file.write(f"observations {observations}\n")
    except Exception as exc:
        if verbose:
            print(f"e {exc}. using observations from past round for a summary.")
        logger.info("dataset summary: %s; using the observations so far", exc)
    summary = await _describe(ObservationSummarizer, model, limiter, observations=observations)
    if log_file:
        log_file.write(f"summary: {summary}\n")
    result = strip_prefix(summary.summary)
    if verbose:
        print(f"\nGenerated summary: {result}\n")
    return result
