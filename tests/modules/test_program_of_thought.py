"""Native ``ProgramOfThought`` against DSPy 3.4.1: the same prompts at every step (generate,
regenerate after a code error, answer) and the same prediction; the code runs in the sandbox
on both sides (DSPy through ``dspex.sandbox.dspy_compat``, since DSPy's default needs Deno)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import dspex
from dspex.modules.program_of_thought import ProgramOfThought
from dspex.sandbox import bwrap_executable
from dspex.testing import LMServer

dspy = pytest.importorskip("dspy")
pytestmark = [
    pytest.mark.filterwarnings("ignore:ProgramOfThought is deprecated:DeprecationWarning"),
    pytest.mark.skipif(bwrap_executable() is None, reason="the sandbox needs bubblewrap"),
]

BAD = "```python\nx = 1 / 0\nSUBMIT({'answer': x})\n```"
SYNTAX = "```python\ndef (\n```"
GOOD = "```python\nvalue = sum([1, 2, 3])\nSUBMIT({'answer': value})\n```"


def _run(
    server: LMServer, lib: Any, replies: list[Any], use_async: bool, max_iters: int = 3
) -> tuple[list[Any], Any]:
    from dspex.sandbox.dspy_compat import sandbox_interpreter_factory

    server.clear()
    server.reply(*replies)
    lm = lib.LM("openai/test", api_base=server.url, api_key="k", cache=False, num_retries=0)
    if lib is dspex:
        pot = ProgramOfThought("question -> answer", max_iters=max_iters)
    else:
        pot = dspy.ProgramOfThought(
            "question -> answer",
            max_iters=max_iters,
            interpreter_factory=sandbox_interpreter_factory(),
        )
    error: BaseException | None = None
    pred = None
    with lib.context(lm=lm):
        try:
            pred = (
                asyncio.run(pot.acall(question="Sum 1..3?"))
                if use_async
                else pot(question="Sum 1..3?")
            )
        except Exception as exc:
            error = exc
    requests = [r.json["messages"] for r in server.requests]
    return requests, pred if error is None else error


def _compare(
    server: LMServer, replies: list[Any], use_async: bool = False, **kw: Any
) -> tuple[list[Any], Any]:
    ours, pred = _run(server, dspex, replies, use_async, **kw)
    theirs, dpred = _run(server, dspy, replies, False, **kw)
    assert len(ours) == len(theirs)
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert a == b, f"request {i} differs"
    if isinstance(pred, BaseException):
        assert type(pred) is type(dpred) and str(pred) == str(dpred)
    else:
        assert dict(pred.items()) == dict(dpred.items())
    return ours, pred


@pytest.mark.parametrize("use_async", [False, True])
def test_code_error_then_retry_matches_dspy(server: LMServer, use_async: bool) -> None:
    replies = [
        {"reasoning": "divide", "generated_code": BAD},
        {"reasoning": "fix it", "generated_code": GOOD},
        {"reasoning": "it printed 6", "answer": "6"},
    ]
    requests, pred = _compare(server, replies, use_async)
    assert pred.answer == "6" and len(requests) == 3
    assert "ZeroDivisionError: division by zero" in str(requests[1])
    assert '{"answer": 6}' in str(requests[2])


def test_syntax_error_and_max_hops_match_dspy(server: LMServer) -> None:
    replies = [
        {"reasoning": "r", "generated_code": SYNTAX},
        {"reasoning": "r", "generated_code": BAD},
    ]
    _, err = _compare(server, replies, max_iters=2)
    assert isinstance(err, RuntimeError) and "Max hops reached" in str(err)


def test_caller_owned_interpreter_is_not_shut_down(server: LMServer) -> None:
    from dspex.sandbox import PythonSandbox

    server.clear()
    server.reply({"reasoning": "r", "generated_code": GOOD}, {"reasoning": "r", "answer": "6"})
    with (
        PythonSandbox(timeout=20) as sandbox,
        dspex.context(lm=dspex.LM("openai/test", api_base=server.url, api_key="k", cache=False)),
    ):
        pot = ProgramOfThought("question -> answer")
        assert pot(sandbox, question="q").answer == "6"
        assert sandbox("1 + 1") == 2  # still alive: the caller owns it
        with pytest.raises(TypeError, match="first positional argument"):
            pot(question="q", interpreter=sandbox)


def test_deprecation_warning_as_dspy() -> None:
    with pytest.warns(
        DeprecationWarning, match=r"ProgramOfThought is deprecated and will be removed in 3\.5"
    ):
        ProgramOfThought("question -> answer")
    with pytest.raises(TypeError):
        ProgramOfThought("question -> answer", interpreter_factory=3)  # type: ignore[arg-type]
