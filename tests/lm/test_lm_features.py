"""Caching, usage, providers and streaming of the native LM client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import dspex
from dspex.lm import track_usage
from dspex.telemetry import capture
from dspex.testing import LMServer

MSGS = [{"role": "user", "content": "hello"}]


@pytest.fixture
def server() -> Iterator[LMServer]:
    with LMServer() as srv:
        yield srv


def test_cache_hits_skip_the_server_and_return_copies(server: LMServer) -> None:
    lm = dspex.LM("openai/m", api_base=server.url, api_key="k")
    with capture("dspex.cache") as cap:
        first = lm(messages=MSGS)
        first.append("mutated")
        second = lm(messages=MSGS)
    assert len(server.requests) == 1 and second == first[:1]
    assert cap.names() == ["dspex.cache.miss", "dspex.cache.hit"]


def test_cache_persists_on_disk_across_instances(server: LMServer) -> None:
    dspex.LM("openai/m", api_base=server.url, api_key="k")(messages=MSGS)
    from dspex.lm.cache import shared_cache

    shared_cache(dspex.current().cache_dir).clear_memory()
    dspex.LM("openai/m", api_base=server.url, api_key="other-key")(messages=MSGS)
    assert len(server.requests) == 1


def test_cache_false_and_rollout_id(server: LMServer) -> None:
    lm = dspex.LM("openai/m", api_base=server.url, api_key="k", cache=False)
    lm(messages=MSGS)
    lm(messages=MSGS)
    assert len(server.requests) == 2
    cached = dspex.LM("openai/m", api_base=server.url, api_key="k")
    cached(messages=MSGS, rollout_id=1)
    cached(messages=MSGS, rollout_id=2)
    cached(messages=MSGS, rollout_id=1)
    assert len(server.requests) == 4
    assert "rollout_id" not in server.requests[-1].json


def test_usage_is_tracked_and_cache_hits_are_not_billed(server: LMServer) -> None:
    lm = dspex.LM("openai/m", api_base=server.url, api_key="k")
    with track_usage() as tracker:
        lm(messages=MSGS)
        lm(messages=MSGS)  # cache hit
    usage = tracker.get_lm_usage()["openai/m"]
    assert usage["prompt_tokens"] > 0 and tracker.calls == 1
    assert lm.history[-1]["cached"] is True and len(lm.inspect_history(2)) == 2


def test_prediction_carries_usage(server: LMServer) -> None:
    lm = dspex.LM("openai/m", api_base=server.url, api_key="k", cache=False)
    with dspex.context(track_usage=True):  # DSPy's default is off
        pred = dspex.Predict("question -> answer")(question="q", lm=lm)
    usage = pred.get_lm_usage()
    assert usage is not None and usage["openai/m"]["total_tokens"] > 0
    assert dspex.Predict("question -> answer")(question="q", lm=lm).get_lm_usage() is None


def test_history_is_bounded(server: LMServer) -> None:
    lm = dspex.LM("openai/m", api_base=server.url, api_key="k", history_size=5)
    for i in range(20):
        lm(messages=[{"role": "user", "content": str(i)}])
    assert len(lm.history) == 5


def test_anthropic_protocol(server: LMServer) -> None:
    lm = dspex.LM("anthropic/claude-test", api_base=server.url, api_key="ak", cache=False)
    pred = dspex.Predict("question -> answer: int")(question="q", lm=lm)
    assert isinstance(pred.answer, int)
    req = server.requests[-1]
    assert req.provider == "anthropic" and req.headers["x-api-key"] == "ak"
    assert "system" in req.json and all(m["role"] != "system" for m in req.json["messages"])
    assert req.json["max_tokens"] > 0


@pytest.mark.parametrize("model", ["openai/m", "anthropic/m"])
async def test_streaming_yields_the_full_text(server: LMServer, model: str) -> None:
    lm = dspex.LM(model, api_base=server.url, api_key="k", cache=False)
    sig = dspex.Signature("question -> answer")
    messages = dspex.ChatAdapter().format(sig, [], {"question": "q"})
    pieces = [p async for p in lm.astream(messages)]
    full = (await lm.acall(messages=messages))[0]
    assert len(pieces) > 1 and "".join(pieces) == full
    await lm.aclose()


def test_n_choices(server: LMServer) -> None:
    lm = dspex.LM("openai/m", api_base=server.url, api_key="k", cache=False)
    assert len(lm(messages=MSGS, n=3)) == 3


def test_aliases_resolve_to_openai_compatible_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    assert dspex.LM("ollama_chat/llama3").endpoint.api_base == "http://localhost:11434/v1"
    monkeypatch.setenv("OPENAI_API_KEY", "env-key")
    assert dspex.LM("openai/x").endpoint.api_key == "env-key"
