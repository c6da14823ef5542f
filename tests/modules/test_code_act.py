"""Native ``CodeAct`` beyond the prompts: construction checks, who owns (and shuts down) the
interpreter, terminal interpreter failures, callbacks, and the router building it natively."""

from __future__ import annotations

from typing import Any

import pytest

import dspex
from dspex.errors import CodeInterpreterError
from dspex.modules.code_act import CodeAct
from dspex.primitives.python_interpreter import PythonInterpreter
from dspex.sandbox import bwrap_executable
from dspex.testing import LMServer
from dspex.utils.callback import BaseCallback

pytestmark = pytest.mark.filterwarnings("ignore:CodeAct is deprecated:DeprecationWarning")
needs_sandbox = pytest.mark.skipif(
    bwrap_executable() is None, reason="the sandbox needs bubblewrap"
)


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


class Recording:
    """An interpreter double: records what it runs; code containing ``boom`` fails terminally."""

    def __init__(self) -> None:
        self.tools: dict[str, Any] = {}
        self.ran: list[str] = []
        self.shut = 0

    def start(self) -> None:
        pass

    def execute(self, code: str, variables: Any = None) -> Any:
        self.ran.append(code)
        if "boom" in code:
            raise CodeInterpreterError("the interpreter process died")
        return "ok"

    def shutdown(self) -> None:
        self.shut += 1


def _lm(server: LMServer) -> Any:
    return dspex.LM("openai/test", api_base=server.url, api_key="k", cache=False, num_retries=0)


def test_construction_checks_and_deprecation() -> None:
    with pytest.warns(
        DeprecationWarning, match=r"CodeAct is deprecated and will be removed in 3\.5"
    ):
        CodeAct("question -> answer", tools=[add])

    class Callable_:
        def __call__(self, x: int) -> int:
            return x

    with pytest.raises(ValueError, match="only accepts functions"):
        CodeAct("question -> answer", tools=[Callable_()])
    with pytest.raises(TypeError, match="ownership is ambiguous"):
        CodeAct("question -> answer", tools=[add], interpreter_factory=Recording())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="zero-argument callable"):
        CodeAct("question -> answer", tools=[add], interpreter_factory=3)  # type: ignore[arg-type]


def test_factory_interpreter_is_shut_down_and_terminal_errors_propagate(server: LMServer) -> None:
    made: list[Recording] = []

    def factory() -> Recording:
        made.append(Recording())
        return made[-1]

    server.clear()
    server.reply({"generated_code": "```python\nboom()\n```", "finished": False})
    act = CodeAct("question -> answer", tools=[add])
    with (
        dspex.context(lm=_lm(server), interpreter_factory=factory),
        pytest.raises(CodeInterpreterError, match="process died"),
    ):
        act(question="q")
    (interp,) = made
    assert interp.ran[0].startswith("def add(a: int, b: int) -> int:")  # the tool's source
    assert interp.ran[1] == "boom()" and interp.shut == 1  # not retried; shut down once
    with (
        dspex.context(interpreter_factory=lambda: object()),
        pytest.raises(TypeError, match="must return a CodeInterpreter"),
    ):
        act(question="q")


def test_caller_owned_interpreter_is_validated_and_left_running(server: LMServer) -> None:
    mine = Recording()
    server.clear()
    server.reply(
        {"generated_code": "```python\nprint(1)\n```", "finished": True},
        {"reasoning": "r", "answer": "1"},
    )
    act = CodeAct("question -> answer", tools=[add], interpreter_factory=Recording)
    with dspex.context(lm=_lm(server)):
        assert act(mine, question="q").answer == "1"
        with pytest.raises(TypeError, match="first positional argument"):
            act(question="q", interpreter=mine)
        with pytest.raises(TypeError, match="must implement CodeInterpreter"):
            act(object(), question="q")
    assert mine.shut == 0 and mine.ran[1] == "print(1)"


class _Events(BaseCallback):
    def __init__(self) -> None:
        self.seen: list[str] = []

    def on_interpreter_execute_start(self, call_id: str, instance: Any, inputs: Any) -> None:
        self.seen.append("execute:" + inputs["code"].splitlines()[0])

    def on_interpreter_shutdown_end(
        self, call_id: str, outputs: Any, exception: Any = None
    ) -> None:
        self.seen.append("shutdown")


@needs_sandbox
def test_real_sandbox_run_reports_interpreter_events(server: LMServer) -> None:
    events = _Events()
    server.clear()
    server.reply(
        {"generated_code": "```python\nx = add(20, 22)\n```", "finished": True},
        {"reasoning": "42", "answer": "42"},
    )
    act = dspex.CodeAct("question -> answer", tools=[add])
    assert type(act) is CodeAct  # the router builds the native class
    with dspex.context(lm=_lm(server), callbacks=[events]):
        pred = act(question="q")
    assert pred.answer == "42" and pred.trajectory["code_output_0"] == "42"
    assert events.seen == [
        "execute:def add(a: int, b: int) -> int:",
        "execute:x = add(20, 22)",
        "shutdown",
    ]


@needs_sandbox
def test_caller_owned_sandbox_keeps_its_state(server: LMServer) -> None:
    server.clear()
    server.reply(
        {"generated_code": "```python\nkept = add(1, 2)\n```", "finished": True},
        {"reasoning": "3", "answer": "3"},
    )
    with PythonInterpreter(timeout=30) as interp, dspex.context(lm=_lm(server)):
        CodeAct("question -> answer", tools=[add])(interp, question="q")
        assert interp.execute("kept") == 3  # the caller's session is still open


def test_registry_lists_code_act_native() -> None:
    rows = {row.kind: row for row in dspex.registry()}
    assert rows["code_act"].native == "dspex.modules.code_act:CodeAct"
    assert rows["code_act"].dspy == "dspy.CodeAct"
