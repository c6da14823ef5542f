"""BootstrapFinetune's failure paths: each a typed error, raised where DSPy raises."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import dspex
from dspex.clients.openai import OpenAIProvider
from dspex.errors import (
    ConfigurationError,
    FinetuneError,
    LMUnsupportedFeatureError,
    OptimizerError,
)
from dspex.teleprompt import BootstrapFinetune
from dspex.teleprompt.bootstrap_finetune import build_call_data_from_trace, prepare_student
from dspex.testing import LMServer
from dspex.utils.dummies import DummyLM
from tests.teleprompt import _oracle
from tests.teleprompt._oracle import exact, trainset

NUMBERS = [2, 4, 5]


@pytest.fixture(scope="module")
def server() -> Iterator[LMServer]:
    with LMServer() as srv:
        srv.add_rule(None, _oracle.oracle)
        yield srv


def _student(lm: Any) -> Any:
    student = _oracle.two_step(dspex)
    if lm is not None:
        student.set_lm(lm)
    return student


def _lm(server: LMServer, model: str = "openai/test", **kwargs: Any) -> dspex.LM:
    return dspex.LM(model, api_base=server.url, api_key="k", cache=False, **kwargs)


def test_a_predictor_without_lm(server: LMServer) -> None:
    with dspex.context(lm=_lm(server)), pytest.raises(ConfigurationError, match="set_lm"):
        BootstrapFinetune(metric=exact).compile(_student(None), trainset=trainset(dspex, NUMBERS))


def test_a_provider_that_cannot_train(server: LMServer) -> None:
    student = _student(_lm(server, "hosted_vllm/test"))
    with pytest.raises(LMUnsupportedFeatureError, match="does not support fine-tuning"):
        BootstrapFinetune(metric=exact).compile(student, trainset=trainset(dspex, NUMBERS))


def test_an_lm_class_without_finetune() -> None:
    student = _student(DummyLM([{"draft": "d", "reasoning": "r", "answer": "even"}] * 10))
    with pytest.raises(ConfigurationError, match="cannot be fine-tuned"):
        BootstrapFinetune().compile(student, trainset=trainset(dspex, NUMBERS))


def test_a_failed_job_propagates(server: LMServer) -> None:
    server.finetuning.fail_next("bad data")
    student = _student(_lm(server, provider=OpenAIProvider(poll_interval=0)))
    with pytest.raises(FinetuneError, match="bad data"):
        BootstrapFinetune(metric=exact).compile(student, trainset=trainset(dspex, NUMBERS))
    assert all(p.lm.model == "openai/test" for p in student.predictors())


def test_more_jobs_than_threads(server: LMServer) -> None:
    student = _student(_lm(server, provider=OpenAIProvider(poll_interval=0)))
    optimizer = BootstrapFinetune(multitask=False, num_threads=1)
    with pytest.raises(ConfigurationError, match="num_threads"):
        optimizer.compile(student, trainset=trainset(dspex, NUMBERS))


def test_teacher_must_match_the_student(server: LMServer) -> None:
    student = _student(_lm(server))
    other = dspex.Predict("question -> answer")
    with pytest.raises(OptimizerError, match="same number of predictors"):
        BootstrapFinetune().compile(student, trainset=trainset(dspex, NUMBERS), teacher=other)
    with pytest.raises(OptimizerError, match="share"):
        BootstrapFinetune().compile(student, trainset=trainset(dspex, NUMBERS), teacher=student)
    student._compiled = True
    with pytest.raises(ConfigurationError, match="should not be compiled"):
        prepare_student(student)


def test_an_adapter_that_formats_its_own_records() -> None:
    class Identity(dspex.ChatAdapter):
        def format_finetune_data(
            self, signature: Any, demos: Any, inputs: Any, outputs: Any
        ) -> Any:
            return {"inputs": inputs, "outputs": outputs}

    pred = dspex.Predict("question -> answer")
    record = build_call_data_from_trace([(pred, {"question": "q"}, {"answer": "a"})], 0, Identity())
    assert record == {"inputs": {"question": "q"}, "outputs": {"answer": "a"}}
