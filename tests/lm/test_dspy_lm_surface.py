"""DSPy's LM surface on DSPex's LM and BaseLM: defaults, reasoning-model options, state,
legacy ``forward`` subclasses, copies, and provider-exception mapping."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

import dspex
from dspex.errors import (
    ContextWindowExceeded,
    LMConfigurationError,
    LMRateLimitError,
    LMUnexpectedError,
    StateError,
)
from dspex.lm import BaseLM, track_usage
from dspex.lm.options import is_openai_reasoning_model
from dspex.lm.providers import build_body, resolve
from dspex.testing import LMServer


def test_base_lm_defaults_as_dspy() -> None:
    callbacks: list[Any] = [object()]
    lm = BaseLM("m", callbacks=callbacks)
    assert lm.kwargs == {"temperature": None, "max_tokens": None}
    assert (lm.num_retries, lm.cache, lm.model_type) == (3, True, "chat")
    assert lm.callbacks == callbacks and lm.callbacks is not callbacks


class Legacy(BaseLM):
    """A DSPy-style LM: ``forward`` returns an OpenAI-shaped completion (a dict here)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("legacy-model", **kwargs)
        self.seen: list[dict[str, Any]] = []

    def forward(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> Any:
        self.seen.append({"prompt": prompt, "messages": messages, **kwargs})
        message: dict[str, Any] = {"content": "hi"}
        if kwargs.get("tools"):
            message["tool_calls"] = [{"id": "c1"}]
        return {
            "choices": [{"message": message}],
            "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3},
            "model": "legacy-model",
        }


async def test_legacy_forward_subclasses_are_called_billed_and_remembered() -> None:
    lm = Legacy(temperature=0.3)
    with track_usage() as tracker:
        assert lm("q") == ["hi"]
        assert await lm.acall(messages=[{"role": "user", "content": "x"}]) == ["hi"]
    assert lm.seen[0] == {
        "prompt": "q", "messages": None, "temperature": 0.3, "max_tokens": None, "cache": True,
    }  # fmt: skip
    assert tracker.get_total_tokens()["legacy-model"]["total_tokens"] == 6
    assert len(lm.history) == 2 and lm.history[0]["outputs"] == ["hi"]
    assert lm("q", tools=[{"t": 1}]) == [{"text": "hi", "tool_calls": [{"id": "c1"}]}]


def test_a_bare_base_lm_says_what_to_implement() -> None:
    with pytest.raises(NotImplementedError, match=r"acall\(\) or forward\(\)"):
        BaseLM("m")("q")


def test_copy_shares_clients_and_isolates_dspy_state() -> None:
    lm = Legacy(temperature=0.1)
    client = object()
    lm.client = client  # type: ignore[attr-defined]
    lm.history = [{"x": 1}]
    copied = lm.copy(temperature=0.2, rollout_id=1)
    assert copied.client is client  # type: ignore[attr-defined]
    assert copied.history == [] and copied.callbacks is not lm.callbacks
    assert copied.kwargs == {"temperature": 0.2, "max_tokens": None, "rollout_id": 1}
    assert lm.kwargs == {"temperature": 0.1, "max_tokens": None}
    assert "temperature" not in copied.copy(temperature=None).kwargs


@pytest.mark.parametrize(
    ("model", "reasoning"),
    [
        ("openai/o1", True), ("openai/o3-mini-2023-01-01", True), ("openai/gpt-5", True),
        ("openai/gpt-5.1-mini", True), ("openai/gpt-5-chat", False), ("openai/gpt-4o", False),
        ("anthropic/claude-3", False),
    ],
)  # fmt: skip
def test_reasoning_model_families(model: str, reasoning: bool) -> None:
    assert is_openai_reasoning_model(model) is reasoning


def test_reasoning_models_take_max_completion_tokens_and_check_their_options() -> None:
    with pytest.raises(LMConfigurationError, match=r"temperature=1\.0 or None"):
        dspex.LM("openai/o1", temperature=0.7, max_tokens=1000)
    lm = dspex.LM("openai/gpt-5-nano", temperature=1.0, max_tokens=16_000)
    assert lm.kwargs == {"temperature": 1.0, "max_completion_tokens": 16_000}
    bare = dspex.LM("openai/gpt-5-mini")
    assert bare.kwargs == {"temperature": None, "max_completion_tokens": None}
    chat = dspex.LM("openai/gpt-5-chat", temperature=0.7, max_tokens=1000)
    assert chat.kwargs == {"temperature": 0.7, "max_tokens": 1000}
    # unset options are not sent
    body = build_body(resolve("openai/gpt-5-mini", None, "k"), [], bare.kwargs)
    assert body == {"model": "gpt-5-mini", "messages": []}


def test_lm_state_is_dspys_and_round_trips() -> None:
    lm = dspex.LM(
        "openai/gpt-4o-mini", temperature=1, max_tokens=100, num_retries=10,
        launch_kwargs={"a": 1}, train_kwargs={"b": 2}, api_key="secret",
    )  # fmt: skip
    state = lm.dump_state()
    assert state == {
        "_dspy_lm_class": "dspy.clients.lm.LM", "model": "openai/gpt-4o-mini",
        "model_type": "chat", "temperature": 1, "max_tokens": 100, "num_retries": 10,
        "cache": True, "finetuning_model": None, "launch_kwargs": {"a": 1},
        "train_kwargs": {"b": 2},
    }  # fmt: skip
    loaded = BaseLM.load_state(state)
    assert isinstance(loaded, dspex.LM) and loaded.dump_state() == state
    assert dspex.LM.load_state(state).dump_state() == state
    reasoning = dspex.LM("openai/gpt-5-nano", temperature=1.0, max_tokens=16_000)
    assert reasoning.dump_state()["max_tokens"] == 16_000
    alias = {**reasoning.dump_state(), "max_completion_tokens": 16_000}
    del alias["max_tokens"]
    assert dspex.LM.load_state(alias).kwargs["max_completion_tokens"] == 16_000
    developer = dspex.LM("openai/gpt-4o-mini", use_developer_role=True)
    assert dspex.LM.load_state(developer.dump_state()).use_developer_role is True


def test_custom_lm_classes_load_only_when_allowed() -> None:
    state = Legacy(temperature=0.5).dump_state()
    assert state["_dspy_lm_class"].endswith("test_dspy_lm_surface.Legacy")
    with pytest.raises(StateError, match="Refusing to import custom serialized LM class"):
        BaseLM.load_state(state)
    with pytest.raises(StateError, match="Could not import"):
        BaseLM.load_state({**state, "_dspy_lm_class": "no.such.Module"}, allow_custom_lm_class=True)


class Deployed(BaseLM):
    """A user LM with its own state and DSPy's older ``load_state(state)`` (no opt-in kwarg)."""

    def __init__(self, model: str, *, deployment: str, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.deployment = deployment

    def dump_state(self) -> dict[str, Any]:
        return {**super().dump_state(), "deployment": self.deployment}

    @classmethod
    def load_state(cls, state: dict[str, Any]) -> Deployed:  # type: ignore[override]
        state = {k: v for k, v in state.items() if k != "_dspy_lm_class"}
        return cls(**state)


def test_a_custom_load_state_without_the_opt_in_kwarg_is_called_as_dspy_calls_it() -> None:
    state = Deployed("m", deployment="prod").dump_state()
    with pytest.raises(StateError, match="Refusing"):
        BaseLM.load_state(state)
    loaded = BaseLM.load_state(state, allow_custom_lm_class=True)
    assert isinstance(loaded, Deployed) and (loaded.model, loaded.deployment) == ("m", "prod")
    program = dspex.Predict("q -> a")
    program.lm = Deployed("m", deployment="eu")
    with pytest.raises(ValueError, match="Refusing to import custom serialized LM class"):
        dspex.Predict("q -> a").load_state(program.dump_state())
    back = dspex.Predict("q -> a").load_state(program.dump_state(), allow_unsafe_lm_state=True)
    assert isinstance(back.lm, Deployed) and back.lm.deployment == "eu"


def test_provider_exceptions_map_to_typed_errors() -> None:
    lm = dspex.LM("openai/gpt-4o-mini")

    class RateLimitError(Exception):
        def __init__(self) -> None:
            super().__init__("too many")
            self.message, self.model, self.llm_provider = "too many", "gpt-4o", "openai"
            self.status_code = 429
            self.response = SimpleNamespace(headers={"x-request-id": "r1", "retry-after": "2"})

    class ContextWindowExceededError(Exception):
        pass

    err = lm._wrap_litellm_exception(RateLimitError())
    assert isinstance(err, LMRateLimitError)
    assert (err.model, err.provider, err.status, err.request_id, err.retry_after) == (
        "gpt-4o", "openai", 429, "r1", 2.0,
    )  # fmt: skip
    assert isinstance(
        lm._wrap_litellm_exception(ContextWindowExceededError()), ContextWindowExceeded
    )
    unknown = lm._wrap_litellm_exception(RuntimeError("local"))
    assert isinstance(unknown, LMUnexpectedError) and unknown.model == "openai/gpt-4o-mini"
    typed = LMRateLimitError("x")
    assert lm._wrap_litellm_exception(typed) is typed


def test_lm_requests_are_unchanged_by_the_new_options(server: LMServer) -> None:
    lm = dspex.LM(
        "openai/m", api_base=server.url, api_key="k", temperature=0.0, cache=False,
        finetuning_model="ft", launch_kwargs={"x": 1}, callbacks=[],
    )  # fmt: skip
    server.clear()
    lm("hello")
    body = server.requests[-1].json
    assert body == {"model": "m", "messages": [{"role": "user", "content": "hello"}],
                    "temperature": 0.0}  # fmt: skip


def test_configure_cache_switches_the_tiers(server: LMServer, tmp_path: Any) -> None:
    from dspex.lm.cache import tiers

    server.clear()
    lm = dspex.LM("openai/cached", api_base=server.url, api_key="k")
    dspex.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    assert tiers() == (False, False)
    lm("same")
    lm("same")
    assert len(server.requests) == 2  # nothing is cached
    dspex.configure_cache(enable_disk_cache=False, enable_memory_cache=True)
    lm("same")
    lm("same")
    assert len(server.requests) == 3  # answered from memory
    dspex.configure_cache(
        enable_disk_cache=True, enable_memory_cache=False, disk_cache_dir=tmp_path
    )
    lm("other")
    lm("other")
    assert len(server.requests) == 4  # answered from disk
    assert (tmp_path / "lm_cache.sqlite").exists()
    dspex.reset_defaults()
    assert tiers() == (True, True)


CITED = {
    "choices": [{"message": {
        "content": "The sky is blue.",
        "provider_specific_fields": {"citations": [[
            {"type": "char_location", "cited_text": "blue", "document_index": 0},
        ], {"type": "char_location", "cited_text": "sky", "document_index": 1}]},
    }}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    "model": "cited",
}  # fmt: skip


def _cited_outputs(base: type) -> list[Any]:
    class Cited(base):  # type: ignore[valid-type, misc]
        def forward(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> Any:
            return CITED

    lm = Cited("cited")
    return list(lm("q"))


def test_a_legacy_completion_keeps_its_provider_citations() -> None:
    outputs = _cited_outputs(BaseLM)
    assert outputs == [{
        "text": "The sky is blue.",
        "citations": [
            {"type": "char_location", "cited_text": "blue", "document_index": 0},
            {"type": "char_location", "cited_text": "sky", "document_index": 1},
        ],
    }]  # fmt: skip
    lm = dspex.LM("test")
    choice = CITED["choices"][0]
    assert lm._extract_citations_from_response(choice) == outputs[0]["citations"]
    assert lm._extract_citations_from_response({"message": {"content": "x"}}) is None


@pytest.mark.dspy
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # DSPy 3.4 deprecates forward()
def test_legacy_citations_match_dspy() -> None:
    dspy = pytest.importorskip("dspy")
    assert _cited_outputs(BaseLM) == _cited_outputs(dspy.BaseLM)
