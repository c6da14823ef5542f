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


# ---------------------------------------------------------------- DSPy's interpreter API
def test_python_interpreter_factory_gives_dspys_prompts(server: LMServer) -> None:
    """``interpreter_factory=PythonInterpreter`` (DSPy's default class, here on the sandbox):
    a code error is retried with the same error text DSPy's run feeds back."""
    from dspex.primitives.python_interpreter import PythonInterpreter

    replies = [
        {"reasoning": "r", "generated_code": BAD},
        {"reasoning": "r", "generated_code": GOOD},
        {"reasoning": "r", "answer": "6"},
    ]
    theirs, d_pred = _run(server, dspy, replies, use_async=False)
    server.clear()
    server.reply(*replies)
    lm = dspex.LM("openai/test", api_base=server.url, api_key="k", cache=False, num_retries=0)
    pot = ProgramOfThought("question -> answer", interpreter_factory=PythonInterpreter)
    with dspex.context(lm=lm):
        pred = pot(question="Sum 1..3?")
    assert [r.json["messages"] for r in server.requests] == theirs
    assert pred.answer == d_pred.answer == "6"


def test_python_interpreter_errors_and_lifecycle() -> None:
    from dspex.errors import CodeExecutionError, CodeInterpreterError, ConfigurationError
    from dspex.primitives.code_interpreter import (
        CodeInterpreter,
        FinalOutput,
        resolve_interpreter_factory,
    )
    from dspex.primitives.python_interpreter import PythonInterpreter

    interp = PythonInterpreter(tools={"double": lambda x: 2 * x}, timeout=20)
    assert isinstance(interp, CodeInterpreter) and interp.deno_process is None
    try:
        assert interp.execute("y = double(x=21)\ny", {"x": 1}) == 42
        # no output_fields: SUBMIT's one parameter is "output" (the sandbox's DSPy rule)
        assert interp.execute("SUBMIT({'answer': y})") == FinalOutput({"output": {"answer": 42}})
        with pytest.raises(CodeExecutionError) as info:
            interp.execute("1 / 0")
        assert info.value.fields["type"] == "ZeroDivisionError"
        assert isinstance(info.value, CodeInterpreterError)
        with pytest.raises(SyntaxError):
            interp.execute("def (")
        assert interp.execute("y") == 42  # the session survived the code errors
    finally:
        interp.shutdown()
    with pytest.raises(CodeInterpreterError, match="shutdown"):
        interp.execute("1")
    with pytest.raises(ConfigurationError, match="enable_network_access"):
        PythonInterpreter(enable_network_access=["example.com"])
    assert resolve_interpreter_factory() is PythonInterpreter

    def mine() -> Any:
        return None

    assert resolve_interpreter_factory(mine) is mine
    with dspex.context(interpreter_factory=mine):
        assert resolve_interpreter_factory() is mine
    with pytest.raises(TypeError):
        resolve_interpreter_factory(3)  # type: ignore[arg-type]


def test_terminal_interpreter_errors_are_not_retried(server: LMServer) -> None:
    from dspex.errors import CodeInterpreterError

    class Broken:
        shut = False

        def execute(self, code: str, variables: Any = None) -> Any:
            raise CodeInterpreterError("protocol corrupt")

        def shutdown(self) -> None:
            Broken.shut = True

    server.clear()
    server.reply({"reasoning": "r", "generated_code": GOOD})
    lm = dspex.LM("openai/test", api_base=server.url, api_key="k", cache=False)
    pot = ProgramOfThought("question -> answer", interpreter_factory=Broken)
    with dspex.context(lm=lm), pytest.raises(CodeInterpreterError, match="protocol corrupt"):
        pot(question="q")
    assert Broken.shut and len(server.requests) == 1
