"""Native ``ReAct`` against DSPy 3.4.1 on the same LM replies: the same request bytes at every
step (1-4 tool calls, failing tools, async tools, truncation) and the same predictions."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import pytest

import dspex
import dspex.adapters.types.tool
from dspex.errors import ContextWindowExceeded
from dspex.modules.react import ReAct
from dspex.testing import Fault, LMServer

dspy = pytest.importorskip("dspy")

CWE_BODY = (
    '{"error": {"message": "This model\'s maximum context length is 8192 tokens", '
    '"code": "context_length_exceeded", "type": "invalid_request_error"}}'
)


def search(query: str) -> str:
    """Search the web for a query."""
    return f"results for {query}"


def add(a: int, b: int = 1) -> int:
    """Add two integers."""
    return a + b


def broken(x: str) -> str:
    """A tool that always fails."""
    raise ValueError(f"cannot handle {x}")


async def lookup(key: str) -> str:
    """Look a key up (async)."""
    await asyncio.sleep(0)
    return f"value of {key}"


def _steps(calls: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    replies = [
        {"next_thought": f"thought {i}", "next_tool_name": name, "next_tool_args": args}
        for i, (name, args) in enumerate(calls)
    ]
    return [*replies, {"reasoning": "done reasoning", "answer": "final answer"}]


_FRAME = re.compile(r'  File "[^"]+", line \d+, in \w+\n(    [^\n]*\n)?(    [~^ ]+\n)?')


def _normalize(text: str) -> str:
    """Tracebacks name each library's own files: compare them without frame lines. Tool
    argument errors are ``dspex.errors.ToolError`` (a ValueError) where DSPy raises a bare
    ``ValueError``: the one documented difference in an observation's text."""
    return _FRAME.sub("", text).replace("dspex.errors.ToolError: ", "ValueError: ")


def _lms(server: LMServer) -> tuple[Any, Any]:
    native = dspex.LM("openai/test", api_base=server.url, api_key="k", cache=False, num_retries=0)
    other = dspy.LM("openai/test", api_base=server.url, api_key="k", cache=False, num_retries=0)
    return native, other


def _run_side(
    server: LMServer,
    lib: Any,
    lm: Any,
    make: Callable[[], Any],
    replies: list[Any],
    faults: list[Fault],
    use_async: bool,
    **inputs: Any,
) -> tuple[list[str], Any]:
    server.clear()
    server.reply(*replies)
    for fault in faults:
        server.fault(fault)
    agent = make()
    with lib.context(lm=lm):
        pred = asyncio.run(agent.acall(**inputs)) if use_async else agent(**inputs)
    bodies = [
        _normalize("\n".join(f"{m['role']}: {m['content']}" for m in r.json["messages"]))
        for r in server.requests
    ]
    return bodies, pred


def _compare(
    server: LMServer,
    tools: list[Any] | Callable[[Any], list[Any]],
    calls: list[tuple[str, dict[str, Any]]],
    *,
    use_async: bool = False,
    faults: Callable[[], list[Fault]] = list,
    replies: list[Any] | None = None,
    max_iters: int = 20,
) -> Any:
    native_lm, dspy_lm = _lms(server)
    tools_for: Callable[[Any], list[Any]] = tools if callable(tools) else (lambda lib: tools)
    script = replies if replies is not None else _steps(calls)
    ours, pred = _run_side(
        server,
        dspex,
        native_lm,
        lambda: ReAct("question -> answer", tools=tools_for(dspex), max_iters=max_iters),
        script,
        faults(),
        use_async,
        question="What is up?",
    )
    theirs, dpred = _run_side(
        server,
        dspy,
        dspy_lm,
        lambda: dspy.ReAct("question -> answer", tools=tools_for(dspy), max_iters=max_iters),
        script,
        faults(),
        use_async,
        question="What is up?",
    )
    assert len(ours) == len(theirs)
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert a == b, f"request {i} differs"
    assert pred.answer == dpred.answer
    assert {k: _normalize(str(v)) for k, v in pred.trajectory.items()} == {
        k: _normalize(str(v)) for k, v in dpred.trajectory.items()
    }
    return pred


@pytest.mark.parametrize("n_calls", [1, 2, 3, 4])
def test_tool_calls_match_dspy(server: LMServer, n_calls: int) -> None:
    calls = [
        ("search", {"query": f"q{i}"}) if i % 2 == 0 else ("add", {"a": i, "b": 2})
        for i in range(n_calls - 1)
    ]
    calls.append(("finish", {}))
    pred = _compare(server, [search, add], calls)
    assert len([k for k in pred.trajectory if k.startswith("observation_")]) == n_calls
    assert pred.trajectory["observation_" + str(n_calls - 1)] == "Completed."


def test_failing_tool_and_unknown_tool_arg_match_dspy(server: LMServer) -> None:
    calls = [("broken", {"x": "it"}), ("add", {"a": 1, "c": 5}), ("finish", {})]
    pred = _compare(server, [broken, add], calls)
    assert pred.trajectory["observation_0"].startswith("Execution error in broken: \nTraceback")
    assert pred.trajectory["observation_0"].endswith("ValueError: cannot handle it")
    assert pred.trajectory["observation_1"].startswith("Execution error in add: ")


def test_async_tools_match_dspy(server: LMServer) -> None:
    calls = [("lookup", {"key": "k1"}), ("search", {"query": "s"}), ("finish", {})]

    def tools(lib: Any) -> list[Any]:
        tool_cls = dspex.adapters.types.tool.Tool if lib is dspex else dspy.Tool
        return [lookup, tool_cls(search, name="search", desc="Find things.")]

    pred = _compare(server, tools, calls, use_async=True)
    assert pred.trajectory["observation_0"] == "value of k1"


def test_max_iters_stops_before_finish(server: LMServer) -> None:
    calls = [("search", {"query": "a"}), ("search", {"query": "b"})]
    pred = _compare(server, [search], calls, max_iters=2)
    assert "observation_1" in pred.trajectory and "thought_2" not in pred.trajectory


def test_truncation_on_context_window_matches_dspy(server: LMServer) -> None:
    # three tool calls, then the 4th react request overflows once: the oldest call is dropped
    calls = [
        ("search", {"query": "a"}),
        ("search", {"query": "b"}),
        ("search", {"query": "c"}),
        ("finish", {}),
    ]

    def overflow_on_fourth_step() -> list[Fault]:
        return [
            Fault(
                status=400,
                body=CWE_BODY,
                match=lambda r: (
                    "observation_2" in str(r.json["messages"])
                    and "thought_0" in str(r.json["messages"])
                ),
            )
        ]

    pred = _compare(server, [search], calls, faults=overflow_on_fourth_step)
    assert "thought_0" not in pred.trajectory and "thought_3" in pred.trajectory


def test_context_window_on_every_react_step_ends_with_extract(server: LMServer) -> None:
    native_lm, _ = _lms(server)
    server.clear()
    server.fault(
        Fault(
            status=400,
            body=CWE_BODY,
            times=1,
            match=lambda r: "next_tool_name" in str(r.json["messages"][0]),
        )
    )
    server.reply({"reasoning": "r", "answer": "fallback"})
    with dspex.context(lm=native_lm):
        pred = ReAct("question -> answer", tools=[search])(question="q")
    assert pred.trajectory == {} and pred.answer == "fallback"


def test_truncate_trajectory_rules() -> None:
    agent = ReAct("question -> answer", tools=[search])
    one_call = {"thought_0": "t", "tool_name_0": "finish", "tool_args_0": {}, "observation_0": "x"}
    with pytest.raises(ContextWindowExceeded):
        agent.truncate_trajectory(dict(one_call))

    def always(**kwargs: Any) -> Any:
        raise ContextWindowExceeded("too long")

    traj = {
        f"{k}_{i}": "v"
        for i in range(4)
        for k in ("thought", "tool_name", "tool_args", "observation")
    }
    with pytest.raises(ContextWindowExceeded, match="even after 3 attempts") as info:
        agent._call_with_potential_trajectory_truncation(always, traj, question="q")
    assert isinstance(info.value.__cause__, ContextWindowExceeded)


def test_react_signature_and_instructions_match_dspy() -> None:
    ours = ReAct("question, context -> answer: int", tools=[search, add])
    theirs = dspy.ReAct("question, context -> answer: int", tools=[search, add])
    assert ours.react.signature.instructions == theirs.react.signature.instructions
    assert list(ours.react.signature.fields) == list(theirs.react.signature.fields)
    assert (
        ours.extract.predict.signature.instructions == theirs.extract.predict.signature.instructions
    )
    assert list(ours.tools) == list(theirs.tools) == ["search", "add", "finish"]
