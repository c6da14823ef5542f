"""LM.finetune/launch/kill and OpenAIProvider against LMServer's fine-tuning API (loopback)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import orjson
import pytest
import requests

import dspex
from dspex.clients.openai import OpenAIProvider
from dspex.clients.provider import Provider, TrainingJob
from dspex.clients.utils_finetune import TrainDataFormat, TrainingStatus, validate_data_format
from dspex.errors import (
    ConfigurationError,
    FinetuneDataError,
    FinetuneError,
    FinetuneTimeout,
    LMUnsupportedFeatureError,
)
from dspex.testing import LMServer

DATA = [
    {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
    for i in range(3)
]


@pytest.fixture
def server() -> Iterator[LMServer]:
    with LMServer() as srv:
        yield srv


def _lm(server: LMServer, provider: Any = None, **kwargs: Any) -> dspex.LM:
    provider = provider or OpenAIProvider(poll_interval=0)
    return dspex.LM(
        "openai/base", api_base=server.url, api_key="sk-secret", provider=provider, **kwargs
    )


def test_finetune_uploads_trains_and_returns_the_tuned_lm(server: LMServer) -> None:
    lm = _lm(server, train_kwargs={"n_epochs": 3}, temperature=0.5)
    job = lm.finetune(DATA, TrainDataFormat.CHAT)
    assert isinstance(job, TrainingJob)
    tuned = job.result(timeout=60)
    assert isinstance(tuned, dspex.LM)
    (job_id,) = server.finetuning.jobs
    assert tuned.model == f"openai/ft:base:dspex::{job_id}"
    assert tuned.kwargs["temperature"] == 0.5 and tuned.provider is lm.provider
    remote = server.finetuning.jobs[job_id]
    assert remote["model"] == "base" and remote["hyperparameters"] == {"n_epochs": 3}
    assert remote["history"] == ["validating_files", "queued", "running", "succeeded"]
    assert server.finetuning.training_data(job_id) == DATA
    assert job.status() is TrainingStatus.succeeded
    assert all(r.headers["authorization"] == "Bearer sk-secret" for r in server.requests)
    assert [r.path for r in server.requests[:2]] == ["/v1/files", "/v1/fine_tuning/jobs"]


def test_finetuning_model_and_explicit_train_kwargs(server: LMServer) -> None:
    lm = _lm(server, finetuning_model="openai/trainable", train_kwargs={"n_epochs": 3})
    lm.finetune(DATA, "chat", {"batch_size": 2}).result(timeout=60)
    (remote,) = server.finetuning.jobs.values()
    assert remote["model"] == "trainable" and remote["hyperparameters"] == {"batch_size": 2}


def test_failed_job_is_the_jobs_result(server: LMServer) -> None:
    server.finetuning.fail_next("loss diverged")
    result = _lm(server).finetune(DATA, "chat").result(timeout=60)
    assert isinstance(result, FinetuneError)
    assert "loss diverged" in str(result) and result.status == "failed"
    assert result.job_id in server.finetuning.jobs


def test_malformed_data_is_refused_by_the_server(server: LMServer) -> None:
    result = _lm(server).finetune([{"prompt": "x"}], "chat").result(timeout=60)
    assert isinstance(result, FinetuneError) and result.status == 400
    assert "messages" in str(result) and not server.finetuning.jobs


def test_unsupported_format_and_local_validation(server: LMServer) -> None:
    result = _lm(server).finetune(DATA, TrainDataFormat.GRPO_CHAT).result(timeout=60)
    assert isinstance(result, FinetuneDataError) and not server.requests
    validate_data_format(DATA, "chat")
    with pytest.raises(FinetuneDataError, match="record 0"):
        validate_data_format([{"messages": [{"role": "bot", "content": "x"}]}], "chat")
    with pytest.raises(FinetuneDataError):
        validate_data_format([{"prompt": "p", "completion": 1}], TrainDataFormat.COMPLETION)


def test_unreachable_server_error_has_no_key() -> None:
    lm = dspex.LM(
        "openai/base",
        api_base="http://127.0.0.1:9/v1",
        api_key="sk-secret",
        provider=OpenAIProvider(poll_interval=0, request_timeout=5),
    )
    result = lm.finetune(DATA, "chat").result(timeout=60)
    assert isinstance(result, FinetuneError) and "sk-secret" not in repr(result.fields)
    assert "cannot reach" in str(result) and "sk-secret" not in str(result)


def test_polling_stops_at_the_deadline(server: LMServer) -> None:
    server.finetuning.hold_jobs = True
    provider = OpenAIProvider(poll_interval=0.01, timeout=0.05)
    result = _lm(server, provider).finetune(DATA, "chat").result(timeout=60)
    assert isinstance(result, FinetuneTimeout) and isinstance(result, TimeoutError)
    # not finished (how far it got through validating_files -> queued -> running depends on load)
    assert server.finetuning.jobs[result.job_id]["status"] in (
        "validating_files",
        "queued",
        "running",
    )


def test_cancel_cancels_the_remote_job_and_deletes_its_file(server: LMServer) -> None:
    server.finetuning.hold_jobs = True
    job = _lm(server, OpenAIProvider(poll_interval=0.01)).finetune(DATA, "chat")
    started = threading.Event()
    for _ in range(2000):  # wait (bounded) until the remote job exists
        if job.provider_job_id is not None:
            started.set()
            break
        started.wait(0.01)
    assert started.is_set()
    job_id = job.provider_job_id
    assert job.cancel() is True and job.cancelled()
    assert job.thread is not None
    job.thread.join(timeout=60)
    assert not job.thread.is_alive()
    assert server.finetuning.jobs[job_id]["status"] == "cancelled"
    assert not server.finetuning.files


def test_provider_settings_are_validated() -> None:
    with pytest.raises(ConfigurationError):
        OpenAIProvider(timeout=0)
    assert OpenAIProvider.is_provider_model("ft:gpt-4o-mini:org::x")
    assert not OpenAIProvider.is_provider_model("anthropic/claude")


def test_lm_without_a_training_provider_refuses() -> None:
    lm = dspex.LM("anthropic/claude-x", api_key="k")
    assert type(lm.provider) is Provider and not lm.provider.finetunable
    lm.launch()
    lm.kill()  # the base provider has nothing to launch or kill
    with pytest.raises(LMUnsupportedFeatureError, match="does not support fine-tuning"):
        lm.finetune(DATA, "chat")
    with pytest.raises(LMUnsupportedFeatureError, match="reinforcement"):
        lm.reinforce({})


class LocalProvider(Provider):
    """A DSPy-style provider (static methods) that trains instantly and records lifecycle calls."""

    calls: ClassVar[list[tuple[str, str]]] = []

    def __init__(self) -> None:
        super().__init__()
        self.finetunable = True

    @staticmethod
    def launch(lm: Any, launch_kwargs: dict[str, Any] | None = None) -> None:
        LocalProvider.calls.append(("launch", lm.model))

    @staticmethod
    def kill(lm: Any, launch_kwargs: dict[str, Any] | None = None) -> None:
        LocalProvider.calls.append(("kill", lm.model))

    @staticmethod
    def finetune(
        job: Any, model: str, train_data: Any, train_data_format: Any, train_kwargs: Any = None
    ) -> str:
        LocalProvider.calls.append(("finetune", f"{model}:{len(train_data)}"))
        return f"{model.split('/')[-1]}-tuned"


def test_a_dspy_style_provider_plugs_in(server: LMServer) -> None:
    LocalProvider.calls = []
    lm = dspex.LM("hosted_vllm/base", api_base=server.url, provider=LocalProvider())
    lm.launch()
    tuned = lm.finetune(DATA, "chat").result(timeout=60)
    tuned.kill()
    assert tuned.model == "hosted_vllm/base-tuned"
    assert LocalProvider.calls == [
        ("launch", "hosted_vllm/base"),
        ("finetune", "hosted_vllm/base:3"),
        ("kill", "hosted_vllm/base-tuned"),
    ]


def test_server_routes_refuse_bad_requests(server: LMServer) -> None:
    files = {"file": ("d.jsonl", b"{}\n", "application/jsonl")}
    bad = requests.post(f"{server.url}/files", data={"purpose": "x"}, files=files, timeout=10)
    assert bad.status_code == 400
    assert requests.get(f"{server.url}/fine_tuning/jobs/nope", timeout=10).status_code == 404
    body = orjson.dumps({"model": "m", "training_file": "file-404"})
    assert requests.post(f"{server.url}/fine_tuning/jobs", data=body, timeout=10).status_code == 400
    ok = requests.post(
        f"{server.url}/files",
        data={"purpose": "fine-tune"},
        files={"file": ("d.jsonl", orjson.dumps(DATA[0]) + b"\n", "application/jsonl")},
        timeout=10,
    ).json()
    job = requests.post(
        f"{server.url}/fine_tuning/jobs",
        data=orjson.dumps({"model": "m", "training_file": ok["id"]}),
        timeout=10,
    ).json()
    events = requests.get(f"{server.url}/fine_tuning/jobs/{job['id']}/events", timeout=10).json()
    assert [e["message"] for e in events["data"]] == ["validating_files"]
