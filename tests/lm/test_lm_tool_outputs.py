"""``dspex.LM`` returns what providers put beside the text: tool calls and reasoning, as
DSPy's LM does (OpenAI and Anthropic wires), and translates tools for Anthropic."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

import dspex
from dspex.lm.outputs import anthropic_outputs, anthropic_tools, openai_outputs
from dspex.testing import LMServer, ToolCallReply

TOOL = {
    "type": "function",
    "function": {
        "name": "search",
        "description": "Look up a term.",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
    },
}


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_tool_calls_come_back_with_the_text(server: LMServer, provider: str) -> None:
    server.clear()
    server.reply(ToolCallReply([("search", {"q": "x"})], text="looking"))
    lm = dspex.LM(f"{provider}/m", api_base=server.url, api_key="k", cache=False)
    (output,) = lm(messages=[{"role": "user", "content": "hi"}], tools=[TOOL])
    assert output["text"] == "looking"
    (call,) = output["tool_calls"]
    assert call["function"]["name"] == "search"
    assert orjson.loads(call["function"]["arguments"]) == {"q": "x"}
    sent = server.requests[-1].json
    if provider == "anthropic":
        assert sent["tools"] == [
            {
                "name": "search",
                "input_schema": TOOL["function"]["parameters"],  # type: ignore[index]
                "description": "Look up a term.",
            }
        ]
    else:
        assert sent["tools"] == [TOOL]


def test_plain_replies_stay_strings_and_cache_hits_keep_dicts(server: LMServer) -> None:
    server.clear()
    server.reply("plain")
    lm = dspex.LM("openai/m", api_base=server.url, api_key="k")
    assert lm("q1") == ["plain"]
    server.reply(ToolCallReply([("search", {"q": "y"})]))
    first = lm(messages=[{"role": "user", "content": "q2"}], tools=[TOOL])
    first[0]["text"] = "mutated by the caller"
    again = lm(messages=[{"role": "user", "content": "q2"}], tools=[TOOL])
    assert len(server.requests) == 2  # the second was a cache hit
    assert again[0]["tool_calls"][0]["function"]["name"] == "search"
    assert again[0]["text"] != "mutated by the caller"


def test_openai_outputs_carry_reasoning_and_requested_logprobs() -> None:
    choices: list[dict[str, Any]] = [
        {"index": 1, "message": {"content": "b"}, "logprobs": {"content": []}},
        {"index": 0, "message": {"content": "a", "reasoning_content": "because"}},
    ]
    assert openai_outputs(choices) == [{"text": "a", "reasoning_content": "because"}, {"text": "b"}]
    assert openai_outputs([{"message": {"content": "x"}}], logprobs=True) == [
        {"text": "x", "logprobs": None}
    ]
    assert openai_outputs([{"message": {"content": None}}]) == [""]


def test_anthropic_blocks_and_tool_turns_translate() -> None:
    blocks = [
        {"type": "thinking", "thinking": "hmm"},
        {"type": "text", "text": "ok"},
        {"type": "tool_use", "id": "t1", "name": "search", "input": {"q": 1}},
    ]
    (output,) = anthropic_outputs(blocks)
    assert output["reasoning_content"] == "hmm" and output["text"] == "ok"
    assert output["tool_calls"][0]["id"] == "t1"
    assert anthropic_outputs([{"type": "text", "text": "only"}]) == ["only"]
    messages = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": None, "tool_calls": output["tool_calls"]},
        {"role": "tool", "tool_call_id": "t1", "content": "found"},
    ]
    options = {"tools": [TOOL], "tool_choice": "required", "parallel_tool_calls": False}
    sent, options = anthropic_tools(messages, options)
    assert sent[1] == {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "t1", "name": "search", "input": {"q": 1}}],
    }
    assert sent[2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "found"}],
    }
    assert options["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    named = {"type": "function", "function": {"name": "search"}}
    assert anthropic_tools([], {"tool_choice": named})[1] == {
        "tool_choice": {"type": "tool", "name": "search"}
    }
