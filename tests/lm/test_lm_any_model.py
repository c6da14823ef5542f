"""Any model string builds an LM (as DSPy's LiteLLM-backed LM): one that no provider here
speaks is usable for everything but a request, and its first request fails with a typed
error. ``api_base``/``base_url`` live in ``kwargs`` as in DSPy, and never reach a body."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import dspex
from dspex.errors import ConfigurationError, LMConfigurationError
from dspex.lm import BaseLM
from dspex.testing import LMServer

MSGS = [{"role": "user", "content": "hello"}]
UNREACHABLE = ["dummy", "dummy_model", "test", "azure/gpt-5-chat", "fakeprovider/fakemodel"]


@pytest.mark.parametrize("model", UNREACHABLE)
def test_any_model_string_builds_and_keeps_its_state(model: str) -> None:
    lm = dspex.LM(model, temperature=0.5, max_tokens=100, cache=False)
    assert lm.model == model and lm.kwargs == {"temperature": 0.5, "max_tokens": 100}
    state = lm.dump_state()
    assert state["model"] == model and state["temperature"] == 0.5
    back = BaseLM.load_state(state)
    assert isinstance(back, dspex.LM) and back.dump_state() == state
    clone = lm.copy(temperature=1.0)
    assert clone.model == model and clone.kwargs["temperature"] == 1.0
    assert model in repr(lm)


def test_model_type_is_the_second_positional_argument_as_in_dspy() -> None:
    lm = dspex.LM("dummy", "text", 0.2, 50)
    assert (lm.model_type, lm.kwargs) == ("text", {"temperature": 0.2, "max_tokens": 50})


@pytest.mark.parametrize("model", UNREACHABLE)
def test_the_first_request_fails_with_a_typed_error_naming_the_providers(model: str) -> None:
    lm = dspex.LM(model, cache=False)
    with pytest.raises(LMConfigurationError, match="openai, anthropic") as info:
        lm(messages=MSGS)
    assert isinstance(info.value, ConfigurationError) and info.value.model == model
    with pytest.raises(LMConfigurationError, match="openai, anthropic"):
        asyncio.run(lm.acall(messages=MSGS))

    async def stream() -> None:
        async for _ in lm.astream(MSGS):
            pass

    with pytest.raises(LMConfigurationError):
        asyncio.run(stream())
    assert list(lm.history) == []


def test_the_error_comes_after_the_cache_as_in_dspy() -> None:
    """DSPy answers a cached request without asking LiteLLM: so does an unreachable LM."""
    from dspex.lm.cache import request_blob, shared_cache

    lm = dspex.LM("dummy")
    blob = request_blob({
        "model": "dummy", "api_base": "", "messages": MSGS, "options": {}, "rollout_id": None,
    })  # fmt: skip
    shared_cache(dspex.current().cache_dir).put(blob, ["from the cache"], {})
    assert lm(messages=MSGS) == ["from the cache"]
    with pytest.raises(LMConfigurationError):
        lm(messages=MSGS, cache=False)


def test_not_a_model_string_is_refused_at_once() -> None:
    for bad in ("", "openai/"):
        with pytest.raises(ConfigurationError):
            dspex.LM(bad)


def test_reasoning_model_rules_apply_to_any_provider_as_in_dspy() -> None:
    lm = dspex.LM("azure/gpt-5", temperature=1.0, max_tokens=16_000)
    assert lm.kwargs == {"temperature": 1.0, "max_completion_tokens": 16_000}
    chat = dspex.LM("azure/gpt-5-chat", temperature=0.7, max_tokens=1000)
    assert chat.kwargs == {"temperature": 0.7, "max_tokens": 1000}
    with pytest.raises(LMConfigurationError, match=r"temperature=1\.0 or None"):
        dspex.LM("azure/o3", temperature=0.5)


def test_unknown_embedding_provider_fails_at_the_first_call() -> None:
    pytest.importorskip("numpy")
    embedder = dspex.Embedder("fakeprovider/embed", caching=False)
    with pytest.raises(LMConfigurationError, match="unknown LM provider"):
        embedder(["x"])


def test_api_base_and_base_url_are_kwargs_and_never_sent() -> None:
    with LMServer() as server:
        lm = dspex.LM("openai/m", api_base=server.url, api_key="k", cache=False)
        assert lm.kwargs["api_base"] == server.url
        assert lm(messages=MSGS)
        alias = dspex.LM("openai/m", base_url=server.url, api_key="k", cache=False)
        assert alias.kwargs["base_url"] == server.url
        assert alias(messages=MSGS)
        assert alias.copy(temperature=0.0)(messages=MSGS)
    assert len(server.requests) == 3
    for request in server.requests:
        assert set(request.json) == {"model", "messages"} | ({"temperature"} & set(request.json))
        assert "api_base" not in request.json and "base_url" not in request.json


@pytest.mark.dspy
def test_state_and_request_body_match_dspy() -> None:
    dspy = pytest.importorskip("dspy")
    from dspex.lm.base import LM_CLASS_STATE_KEY

    for model, kw in [
        ("dummy", {"temperature": 0.3}),
        ("azure/gpt-5-chat", {"temperature": 0.7, "max_tokens": 1000}),
        ("azure/gpt-5", {"temperature": 1.0, "max_tokens": 16_000}),
        ("openai/m", {"api_base": "http://h/v1", "temperature": 0.1}),
    ]:
        ours, theirs = dspex.LM(model, **kw), dspy.LM(model, **kw)
        # DSPy keeps an unset max_tokens as None for non-reasoning models; DSPex drops it
        assert ours.kwargs == _set(theirs.kwargs), model
        assert _set(ours.dump_state()) == _set(theirs.dump_state()), model
        assert ours.dump_state()[LM_CLASS_STATE_KEY] == "dspy.clients.lm.LM"

    with LMServer() as server:
        kw: dict[str, Any] = {"temperature": 0.4, "max_tokens": 20, "cache": False}
        native = dspex.LM("openai/m", api_base=server.url, api_key="k", **kw)
        native("hello")
        reference = dspy.LM("openai/m", api_base=server.url, api_key="k", num_retries=0, **kw)
        reference("hello")
    ours_body, dspy_body = (dict(r.json) for r in server.requests)
    # DSPy 3.4.1's lm15 engine names the token cap max_completion_tokens for every openai/
    # model; DSPex sends max_tokens to non-reasoning models (what every OpenAI-compatible
    # server reads). Everything else is the same, and no client option is in either body.
    dspy_body["max_tokens"] = dspy_body.pop("max_completion_tokens")
    assert ours_body == dspy_body


def _set(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if v is not None}
