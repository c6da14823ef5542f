"""Native ``ReActV2`` on its own: construction errors, routing, state, the sync/async paths and
the failure paths (parity with DSPy is in ``test_react_v2_parity.py``)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

import dspex
from dspex.errors import AgentNoFinalOutputs, LMServerError, SignatureError, ToolError
from dspex.modules.react_v2 import ReActV2
from dspex.testing import Fault, LMServer, ToolCallReply

MODEL = "openai/gpt-4o-mini"


def lookup(query: str) -> str:
    """Look a query up."""
    return f"found {query}"


async def slow_lookup(query: str) -> str:
    """Look a query up (async)."""
    await asyncio.sleep(0)
    return f"async {query}"


def _thought(text: str) -> str:
    return f"[[ ## next_thought ## ]]\n{text}\n\n[[ ## completed ## ]]"


def _context(server: LMServer, **adapter: Any) -> Any:
    lm = dspex.LM(MODEL, api_base=server.url, api_key="k", cache=False, num_retries=0)
    options = {"use_native_function_calling": True, **adapter}
    return dspex.context(lm=lm, adapter=dspex.ChatAdapter(**options))


@pytest.fixture
def lm_server(server: LMServer) -> LMServer:
    server.clear()
    return server


def test_public_name_builds_the_native_module() -> None:
    agent = dspex.ReActV2("question -> answer", tools=[lookup])
    assert isinstance(agent, ReActV2) and agent.implementation == "native"
    assert list(agent.tools) == ["lookup", "submit"]
    assert agent.tools["submit"](answer="Paris") == {"answer": "Paris"}
    row = next(r for r in dspex.registry() if r.kind == "react_v2")
    assert row.default == "native" and row.dspy == "dspy.ReActV2"
    fields = agent.react.signature
    assert list(fields.input_fields) == ["question", "history", "tools"]
    assert list(fields.output_fields) == ["next_thought", "tool_calls"]
    assert "The available tools are: `lookup`, `submit`." in fields.instructions


@pytest.mark.parametrize(
    ("signature", "tools", "error", "text"),
    [
        ("question -> history", [], SignatureError, "`history` are reserved"),
        ("question -> answer, termination_reason", [], SignatureError, "reserved by ReActV2"),
        ("tools, question -> answer", [], SignatureError, "`tools` are reserved"),
        ("question -> answer", [dspex.Tool(lookup, name="submit")], ToolError, "`submit`"),
    ],
)
def test_reserved_names_are_refused(
    signature: str, tools: list[Any], error: type[Exception], text: str
) -> None:
    with pytest.raises(error, match=text) as caught:
        ReActV2(signature, tools=tools)
    assert isinstance(caught.value, ValueError)  # as DSPy raises


def test_submit_tool_checks_its_outputs() -> None:
    agent = ReActV2("question -> answer: int, note", tools=[])
    assert agent.tools["submit"].args == {"answer": {"type": "integer"}, "note": {"type": "string"}}
    with pytest.raises(ToolError, match="Missing required final output field"):
        agent.tools["submit"](answer=1)
    assert agent.tools["submit"](answer=2, note="n") == {"answer": 2, "note": "n"}
    with pytest.raises(ToolError, match="not of type"):
        agent.tools["submit"](answer="two", note="n")


def test_state_matches_dspy_layout_and_round_trips() -> None:
    agent = ReActV2("question -> answer", tools=[lookup])
    state = agent.dump_state()
    assert list(state) == ["react"]
    agent.react.demos = [{"question": "q", "next_thought": "t"}]
    other = ReActV2("question -> answer", tools=[lookup])
    other.load_state(agent.dump_state())
    assert other.react.demos[0]["question"] == "q"


def test_sync_episode_with_async_tool_reports_the_error_and_continues(
    lm_server: LMServer,
) -> None:
    lm_server.reply(
        ToolCallReply([("slow_lookup", {"query": "x"})], text=_thought("try")),
        ToolCallReply([("submit", {"answer": "ok"})], text=_thought("done")),
    )
    with _context(lm_server):
        pred = ReActV2("question -> answer", tools=[slow_lookup])(question="q")
    result = pred.history.messages[0]["tool_calls"].tool_call_results.tool_call_results[0]
    assert result.is_error and "please use `acall`" in result.value
    assert pred.answer == "ok" and pred.termination_reason == "submit"


def test_async_episode_awaits_async_tools(lm_server: LMServer) -> None:
    lm_server.reply(
        ToolCallReply([("slow_lookup", {"query": "x"})], text=_thought("try")),
        ToolCallReply([("submit", {"answer": "ok"})], text=_thought("done")),
    )
    with _context(lm_server):
        pred = asyncio.run(ReActV2("question -> answer", tools=[slow_lookup]).acall(question="q"))
    result = pred.history.messages[0]["tool_calls"].tool_call_results.tool_call_results[0]
    assert not result.is_error and result.value == "async x"
    tool_row = [m for m in lm_server.requests[1].json["messages"] if m["role"] == "tool"]
    assert tool_row[0]["content"] == "async x" and "name" not in tool_row[0]


def test_max_iters_per_call_and_forced_submit_request(lm_server: LMServer) -> None:
    lm_server.reply(
        ToolCallReply([("lookup", {"query": "a"})], text=_thought("one")),
        ToolCallReply([("submit", {"answer": "forced"})], text=None),
    )
    with _context(lm_server):
        pred = ReActV2("question -> answer", tools=[lookup])(question="q", max_iters=1)
    assert pred.termination_reason == "forced_submit" and pred.answer == "forced"
    forced = lm_server.requests[1].json
    assert forced["tool_choice"] == {"type": "function", "function": {"name": "submit"}}
    # the forced turn replays the first turn's call and result with the provider id
    call_id = pred.history.messages[0]["tool_calls"].tool_calls[0].id
    assert call_id.startswith("call_")
    assert any(m.get("tool_call_id") == call_id for m in forced["messages"])


def test_no_submit_after_forcing_is_a_typed_error(lm_server: LMServer) -> None:
    lm_server.reply(_thought("nothing to do"), _thought("still nothing"))
    with _context(lm_server), pytest.raises(AgentNoFinalOutputs, match="no submit call") as err:
        ReActV2("question -> answer", tools=[lookup])(question="q")
    assert err.value.reason == "empty_tool_calls"


def test_lm_failure_propagates(lm_server: LMServer) -> None:
    lm_server.fault(Fault(status=500, body='{"error": {"message": "boom"}}', times=-1))
    with _context(lm_server), pytest.raises(LMServerError):
        ReActV2("question -> answer", tools=[lookup])(question="q")


def test_caller_history_is_extended_in_place(lm_server: LMServer) -> None:
    lm_server.reply(ToolCallReply([("submit", {"answer": "a2"})], text=_thought("t")))
    history = dspex.History(messages=[{"question": "q1", "answer": "a1"}])
    with _context(lm_server):
        pred = ReActV2("question -> answer", tools=[])(question="q2", history=history)
    assert pred.history is history and len(history.messages) == 2
    assert history.messages[1]["answer"] == "a2" and history.messages[1]["question"] == "q2"
    sent = lm_server.requests[0].json["messages"]
    assert json.dumps(sent).count("q1") == 1
