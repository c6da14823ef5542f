"""Native ``ReActV2`` against DSPy 3.4.1's ``dspy.ReActV2`` on one ``LMServer``, same replies.

Every scenario runs the native agent, then DSPy's, against the same scripted replies and
checks: the same number of requests; each request body byte for byte (the whole HTTP body:
messages with replayed tool calls and ``tool`` results, ``tools``, ``tool_choice``,
``parallel_tool_calls``, reasoning options); the same prediction (outputs, ``termination_reason``
and the history with its tool calls, provider ids and results), or the same failure.

A tool error's result holds a traceback whose frames name each library's files: only there are
frame lines dropped before comparing, and ``dspex.errors.ToolError`` (a ValueError) read as
DSPy's bare ``ValueError`` - the documented difference (as in ``test_react.py``).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

import dspex
from dspex.errors import AgentNoFinalOutputs, ContextWindowExceeded
from dspex.modules.react_v2 import ReActV2
from dspex.testing import Fault, LMServer, ToolCallReply

dspy = pytest.importorskip("dspy")
pytestmark = pytest.mark.dspy

FC_MODEL = "openai/gpt-4o-mini"  # function calling, no native reasoning
REASONING_MODEL = "openai/o4-mini"  # function calling and native reasoning
CWE_BODY = (
    '{"error": {"message": "This model\'s maximum context length is 8192 tokens", '
    '"code": "context_length_exceeded", "type": "invalid_request_error"}}'
)


def lookup(query: str) -> str:
    """Look a query up."""
    return f"found {query}"


def add(a: int, b: int = 1) -> int:
    """Add two integers."""
    return a + b


def broken(x: str) -> str:
    """A tool that always fails."""
    raise ValueError(f"cannot handle {x}")


async def fetch(key: str) -> dict[str, Any]:
    """Fetch a record (async)."""
    await asyncio.sleep(0)
    return {"key": key, "tags": ["a", "é"]}


def thought(text: str) -> str:
    """The ChatAdapter text that comes with native tool calls (the fields left in the prompt)."""
    return f"[[ ## next_thought ## ]]\n{text}\n\n[[ ## completed ## ]]"


def calls(*pairs: tuple[str, dict[str, Any]], text: str | None = "thinking") -> ToolCallReply:
    return ToolCallReply(list(pairs), text=None if text is None else thought(text))


def text_turn(name: str, args: dict[str, Any], note: str = "step") -> dict[str, Any]:
    """A text-mode reply (no native function calling): the fields rendered by the server."""
    return {"next_thought": note, "tool_calls": {"tool_calls": [{"name": name, "args": args}]}}


@dataclass
class Scenario:
    replies: list[Any]
    tools: Callable[[Any], list[Any]] = lambda lib: [lookup, add]
    adapter: Callable[[Any], Any] = lambda lib: lib.ChatAdapter(use_native_function_calling=True)
    model: str = FC_MODEL
    inputs: dict[str, Any] = field(default_factory=lambda: {"question": "cats?"})
    signature: str = "question -> answer"
    max_iters: int = 20
    faults: Callable[[], list[Fault]] = list
    use_async: bool = False


@dataclass
class Side:
    bodies: list[bytes]
    prediction: Any = None
    error: BaseException | None = None


_FRAME = re.compile(r'  File "[^"]+", line \d+, in \w+\n(    [^\n]*\n)?(    [~^ ]+\n)?')


def _normalize(value: Any) -> Any:
    if isinstance(value, str):
        return _FRAME.sub("", value).replace("dspex.errors.ToolError: ", "ValueError: ")
    if isinstance(value, list):
        return [_normalize(v) for v in value]
    if isinstance(value, dict):
        return {k: _normalize(v) for k, v in value.items()}
    return value


def _run(server: LMServer, lib: Any, case: Scenario) -> Side:
    server.clear()
    server.reply(*case.replies)
    for fault in case.faults():
        server.fault(fault)
    lm = lib.LM(case.model, api_base=server.url, api_key="k", cache=False, num_retries=0)
    cls = ReActV2 if lib is dspex else dspy.ReActV2
    agent = cls(case.signature, tools=case.tools(lib), max_iters=case.max_iters)
    side = Side([])
    with lib.context(lm=lm, adapter=case.adapter(lib)):
        try:
            if case.use_async:
                side.prediction = asyncio.run(agent.acall(**case.inputs))
            else:
                side.prediction = agent(**case.inputs)
        except Exception as exc:
            side.error = exc
    side.bodies = [r.body for r in server.requests]
    return side


_ERRORS = {
    "AgentNoFinalOutputs": "ValueError",
    "ContextWindowExceeded": "ContextWindowExceededError",
}


def _history(pred: Any) -> Any:
    return _normalize(
        [
            {k: v.model_dump(mode="json") if hasattr(v, "model_dump") else v for k, v in m.items()}
            for m in pred.history.messages
        ]
    )


def compare(server: LMServer, case: Scenario) -> tuple[Side, Side]:
    ours, theirs = _run(server, dspex, case), _run(server, dspy, case)
    assert len(ours.bodies) == len(theirs.bodies), (len(ours.bodies), len(theirs.bodies))
    for i, (a, b) in enumerate(zip(ours.bodies, theirs.bodies, strict=True)):
        if a == b:
            continue
        # only a tool error's traceback may differ: its frame lines, nothing else
        na, nb = _normalize(json.loads(a)), _normalize(json.loads(b))
        assert json.dumps(na) == json.dumps(nb), f"request {i} differs:\n{a!r}\n{b!r}"
        assert "Execution error in" in a.decode(), f"request {i} differs:\n{a!r}\n{b!r}"
    if theirs.error is not None:
        assert ours.error is not None, f"DSPy raised {theirs.error!r}, native returned"
        # the same kind of failure (ours are typed; the LM's messages are the LM layer's)
        assert _ERRORS[type(ours.error).__name__] == type(theirs.error).__name__
        if isinstance(ours.error, AgentNoFinalOutputs):
            assert _normalize(str(ours.error)) == _normalize(str(theirs.error))
        return ours, theirs
    assert ours.error is None, f"native raised {ours.error!r}"
    mine, other = ours.prediction, theirs.prediction
    keys = list(mine.keys())
    assert keys == list(other.keys())
    for key in keys:
        if key != "history":
            assert mine[key] == other[key], key
    assert _history(mine) == _history(other)
    return ours, theirs


# ---------------------------------------------------------------------------- episodes


@pytest.mark.parametrize("n_calls", [1, 2, 3, 4])
def test_native_tool_calls_match_dspy(server: LMServer, n_calls: int) -> None:
    turns: list[Any] = [
        calls(("lookup", {"query": f"q{i}"}) if i % 2 == 0 else ("add", {"a": i, "b": 2}))
        for i in range(n_calls - 1)
    ]
    turns.append(calls(("submit", {"answer": "done"}), text="ready"))
    ours, _ = compare(server, Scenario(turns))
    pred = ours.prediction
    assert pred.answer == "done" and pred.termination_reason == "submit"
    assert len(pred.history.messages) == n_calls
    assert len(ours.bodies) == n_calls
    # every later request replays the earlier calls as tool messages with the provider ids
    last = json.loads(ours.bodies[-1])["messages"]
    ids = [m["tool_call_id"] for m in last if m["role"] == "tool"]
    assert ids == [m["tool_calls"].tool_calls[0].id for m in pred.history.messages[:-1]]


def test_parallel_calls_with_async_tool_match_dspy(server: LMServer) -> None:
    def tools(lib: Any) -> list[Any]:
        tool_cls = dspex.Tool if lib is dspex else dspy.Tool
        return [lookup, tool_cls(fetch, name="fetch", desc="Fetch a record.")]

    turns = [
        calls(("lookup", {"query": "cats"}), ("fetch", {"key": "k1"}), ("lookup", {"query": "ü"})),
        calls(("submit", {"answer": "found"}), text=None),
    ]
    parallel = lambda lib: lib.ChatAdapter(  # noqa: E731
        use_native_function_calling=True, parallel_tool_calls=True
    )
    ours, _ = compare(server, Scenario(turns, tools, parallel, use_async=True))
    first = json.loads(ours.bodies[0])
    assert first["parallel_tool_calls"] is True and first["tool_choice"] == "auto"
    tool_rows = [m for m in json.loads(ours.bodies[1])["messages"] if m["role"] == "tool"]
    assert [r["content"] for r in tool_rows][:2] == [
        "found cats",
        '{"key": "k1", "tags": ["a", "é"]}',
    ]


def test_failing_unknown_and_bad_argument_tools_match_dspy(server: LMServer) -> None:
    turns = [
        calls(("broken", {"x": "it"}), ("nope", {"q": 1})),
        calls(("add", {"a": 1, "c": 5})),
        calls(("submit", {"answer": "recovered"})),
    ]
    ours, _ = compare(server, Scenario(turns, lambda lib: [broken, add]))
    results = [
        m["tool_calls"].tool_call_results.tool_call_results
        for m in ours.prediction.history.messages
    ]
    assert [r.is_error for r in results[0]] == [True, True]
    assert results[0][0].value.startswith("Execution error in broken: \nTraceback")
    assert results[0][1].value == "Unknown tool: nope"
    assert results[1][0].is_error and "Execution error in add" in results[1][0].value


def test_forced_submit_after_empty_tool_calls_matches_dspy(server: LMServer) -> None:
    turns = [thought("no tool needed"), calls(("submit", {"answer": "forced"}), text=None)]
    ours, _ = compare(server, Scenario(turns))
    assert ours.prediction.termination_reason == "forced_submit"
    forced = json.loads(ours.bodies[1])
    assert forced["tool_choice"] == {"type": "function", "function": {"name": "submit"}}


def test_max_iters_forces_submit_matches_dspy(server: LMServer) -> None:
    turns = [calls(("lookup", {"query": "a"})), calls(("lookup", {"query": "b"}))]
    turns.append(calls(("lookup", {"query": "c"}), ("submit", {"answer": "last"})))
    ours, _ = compare(server, Scenario(turns, max_iters=2))
    pred = ours.prediction
    assert pred.termination_reason == "forced_submit" and pred.answer == "last"
    # the forced turn keeps only the submit call
    assert [c.name for c in pred.history.messages[-1]["tool_calls"].tool_calls] == ["submit"]


def test_context_window_overflow_forces_submit_matches_dspy(server: LMServer) -> None:
    turns = [calls(("lookup", {"query": "a"})), calls(("submit", {"answer": "short"}))]

    def overflow_second_request() -> list[Fault]:
        return [Fault(status=400, body=CWE_BODY, match=lambda r: "found a" in r.body.decode())]

    ours, _ = compare(server, Scenario(turns, faults=overflow_second_request))
    assert ours.prediction.termination_reason == "forced_submit"


def test_overflow_on_forced_submit_raises_like_dspy(server: LMServer) -> None:
    turns = [calls(("lookup", {"query": "a"}))]

    def always_after_first() -> list[Fault]:
        return [
            Fault(status=400, body=CWE_BODY, times=-1, match=lambda r: "found a" in r.body.decode())
        ]

    ours, theirs = compare(server, Scenario(turns, faults=always_after_first))
    assert isinstance(ours.error, ContextWindowExceeded)
    assert type(theirs.error).__name__ == "ContextWindowExceededError"


def test_forced_submit_without_submit_call_raises_like_dspy(server: LMServer) -> None:
    turns = [thought("nothing"), calls(("lookup", {"query": "x"}), text=None)]
    ours, _ = compare(server, Scenario(turns))
    assert isinstance(ours.error, AgentNoFinalOutputs) and isinstance(ours.error, ValueError)
    assert ours.error.reason == "empty_tool_calls"


def test_text_mode_tool_calls_match_dspy(server: LMServer) -> None:
    turns = [
        text_turn("lookup", {"query": "cats"}, "look it up"),
        text_turn("add", {"a": 2}, "add"),
        text_turn("submit", {"answer": "found cats"}, "answer"),
    ]
    ours, _ = compare(server, Scenario(turns, adapter=lambda lib: lib.ChatAdapter()))
    assert ours.prediction.answer == "found cats"
    assert ours.prediction.history.messages[0]["tool_calls"].tool_calls[0].id == "call_0_0"


def test_json_adapter_and_typed_outputs_match_dspy(server: LMServer) -> None:
    turns = [
        text_turn("lookup", {"query": "n"}),
        text_turn("submit", {"answer": "x", "score": 3}),
    ]
    case = Scenario(
        turns,
        adapter=lambda lib: lib.JSONAdapter(use_native_function_calling=False),
        signature="question: str, context: list[str] -> answer: str, score: int",
        inputs={"question": "q", "context": ["a", "b"]},
    )
    ours, _ = compare(server, case)
    assert ours.prediction.score == 3
    # JSONAdapter with native tools: structured output for next_thought, calls beside it
    native = [
        ToolCallReply([("lookup", {"query": "n"})], text='{"next_thought": "look"}'),
        ToolCallReply([("submit", {"answer": "y", "score": 4})], text='{"next_thought": "ok"}'),
    ]
    case.replies, case.adapter = native, lambda lib: lib.JSONAdapter()
    ours, _ = compare(server, case)
    assert ours.prediction.score == 4 and ours.prediction.termination_reason == "submit"
    assert "response_format" in json.loads(ours.bodies[0])


def test_reasoning_model_requests_match_dspy(server: LMServer) -> None:
    turns = [
        ToolCallReply([("lookup", {"query": "a"})]),
        "no tool calls this time",
        ToolCallReply([("submit", {"answer": "r"})]),
    ]
    ours, _ = compare(server, Scenario(turns, model=REASONING_MODEL))
    bodies = [json.loads(b) for b in ours.bodies]
    assert [b.get("reasoning_effort") for b in bodies] == ["low", "low", None]
    assert ours.prediction.termination_reason == "forced_submit"


def test_serialized_history_input_matches_dspy(server: LMServer) -> None:
    turns = [calls(("submit", {"answer": "again"}))]
    earlier = {"messages": [{"question": "old", "next_thought": "t", "answer": "older"}]}
    ours, _ = compare(server, Scenario(turns, inputs={"question": "new", "history": earlier}))
    assert ours.prediction.history.messages[0]["question"] == "old"


def test_submit_with_missing_output_on_forced_submit_raises_like_dspy(server: LMServer) -> None:
    turns = [thought("idle"), calls(("submit", {"answer": "half"}), text=None)]
    case = Scenario(turns, signature="question -> answer, confidence: float")
    ours, _ = compare(server, case)
    assert isinstance(ours.error, AgentNoFinalOutputs)
    assert "submit failed" in str(ours.error)


def test_parity_check_fails_when_requests_differ(server: LMServer) -> None:
    """The harness itself: a one-byte change in the native prompt is caught."""
    original = ReActV2._make_react_signature

    def altered(self: ReActV2) -> Any:
        return original(self).with_instructions(original(self).instructions + " ")

    turns = [calls(("submit", {"answer": "x"}))]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ReActV2, "_make_react_signature", altered)
        with pytest.raises(AssertionError, match="request 0 differs"):
            compare(server, Scenario(turns))
