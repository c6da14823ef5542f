"""``PythonInterpreter`` reports its calls to callbacks as DSPy 3.4.1's does: startup (lazy,
nested in the first ``execute``), execute, host tool calls (raw result or the tool's own
exception) and every ``shutdown`` call; tool calls from code go through DSPy's
``_handle_tool_call`` -> ``invoke_tool`` -> ``_write_message`` path. The code runs in the real
sandbox (bubblewrap)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from typing import Any

import psutil
import pytest
from pydantic import BaseModel

import dspex
from dspex.errors import CodeExecutionError, CodeInterpreterError
from dspex.primitives.code_interpreter import FinalOutput
from dspex.primitives.python_interpreter import PythonInterpreter
from dspex.sandbox import bwrap_executable
from dspex.utils.callback import ACTIVE_CALL_ID, BaseCallback

needs_sandbox = pytest.mark.skipif(
    bwrap_executable() is None, reason="the sandbox needs bubblewrap"
)


class Recorder(BaseCallback):
    """Records every interpreter hook call with the active parent call id."""

    def __init__(self, name: str = "", shared: list[tuple[str, str]] | None = None) -> None:
        self.events: list[dict[str, Any]] = []
        self.name = name
        self.shared = shared

    def _add(self, handler: str, **event: Any) -> None:
        event.update(handler=handler, parent=ACTIVE_CALL_ID.get())
        self.events.append(event)
        if self.shared is not None:
            self.shared.append((self.name, handler))

    def on_interpreter_execute_start(self, call_id: str, instance: Any, inputs: Any) -> None:
        self._add("execute_start", call_id=call_id, instance=instance, inputs=inputs)

    def on_interpreter_execute_end(self, call_id: str, outputs: Any, exception: Any = None) -> None:
        self._add("execute_end", call_id=call_id, outputs=outputs, exception=exception)

    def on_interpreter_tool_call_start(self, call_id: str, instance: Any, inputs: Any) -> None:
        self._add("tool_start", call_id=call_id, instance=instance, inputs=inputs)

    def on_interpreter_tool_call_end(
        self, call_id: str, outputs: Any, exception: Any = None
    ) -> None:
        self._add("tool_end", call_id=call_id, outputs=outputs, exception=exception)

    def on_interpreter_startup_start(self, call_id: str, instance: Any, inputs: Any) -> None:
        self._add("startup_start", call_id=call_id, instance=instance, inputs=inputs)

    def on_interpreter_startup_end(self, call_id: str, outputs: Any, exception: Any = None) -> None:
        self._add("startup_end", call_id=call_id, outputs=outputs, exception=exception)

    def on_interpreter_shutdown_start(self, call_id: str, instance: Any, inputs: Any) -> None:
        self._add("shutdown_start", call_id=call_id, instance=instance, inputs=inputs)

    def on_interpreter_shutdown_end(
        self, call_id: str, outputs: Any, exception: Any = None
    ) -> None:
        self._add("shutdown_end", call_id=call_id, outputs=outputs, exception=exception)

    def of(self, handler: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["handler"] == handler]

    def handlers(self) -> list[str]:
        return [e["handler"] for e in self.events]


# ---------------------------------------------------------------- the real sandbox
@needs_sandbox
def test_lazy_startup_and_tool_calls_nest_in_execute_for_global_and_instance_callbacks() -> None:
    shared: list[tuple[str, str]] = []
    glob, own = Recorder("global", shared), Recorder("instance", shared)
    with (
        dspex.context(callbacks=[glob]),
        PythonInterpreter(tools={"echo": lambda value: value}, callbacks=[own], timeout=30) as it,
    ):
        assert it.execute("echo(value=payload)", variables={"payload": "first"}) == "first"
        final = it.execute("SUBMIT('done')")
    assert final == FinalOutput({"output": "done"})
    expected = [
        "execute_start",
        "startup_start",
        "startup_end",
        "tool_start",
        "tool_end",
        "execute_end",
        "execute_start",
        "execute_end",
        "shutdown_start",
        "shutdown_end",
    ]
    assert glob.handlers() == own.handlers() == expected
    assert shared == [(src, h) for h in expected for src in ("global", "instance")]
    ex1, st_s, st_e, tl_s, tl_e, ex1_end, ex2, ex2_end, sd_s, sd_e = own.events
    assert ex1["inputs"] == {"code": "echo(value=payload)", "variables": {"payload": "first"}}
    assert ex1["instance"] is it and ex1["parent"] is None
    assert st_s["parent"] == tl_s["parent"] == ex1["call_id"]
    assert st_s["inputs"] == {}
    assert st_e["call_id"] == st_s["call_id"] and st_e["exception"] is None
    assert tl_s["inputs"] == {"tool_name": "echo", "kwargs": {"value": "first"}}
    assert tl_e["call_id"] == tl_s["call_id"] and tl_e["outputs"] == "first"
    assert ex1_end["call_id"] == ex1["call_id"] and ex1_end["outputs"] == "first"
    assert ex2_end["call_id"] == ex2["call_id"] and ex2_end["outputs"] is final
    assert sd_e["call_id"] == sd_s["call_id"] and sd_e["exception"] is None


@needs_sandbox
def test_each_explicit_start_and_shutdown_call_fires() -> None:
    rec = Recorder()
    it = PythonInterpreter(callbacks=[rec], timeout=30)
    it.start()
    it.start()  # idempotent, still reported
    assert it.execute("1 + 1") == 2  # already started: no lazy startup
    it.shutdown()
    it.shutdown()
    assert rec.handlers() == [
        "startup_start",
        "startup_end",
        "startup_start",
        "startup_end",
        "execute_start",
        "execute_end",
        "shutdown_start",
        "shutdown_end",
        "shutdown_start",
        "shutdown_end",
    ]
    assert all(e["parent"] is None for e in rec.of("startup_start"))
    with pytest.raises(CodeInterpreterError, match="shutdown"):
        it.start()
    assert rec.of("startup_end")[-1]["exception"] is not None


@needs_sandbox
def test_code_error_is_reported_then_propagated_and_the_session_survives() -> None:
    rec = Recorder()
    with PythonInterpreter(callbacks=[rec], timeout=30) as it:
        with pytest.raises(CodeExecutionError, match="ValueError: boom") as info:
            it.execute("raise ValueError('boom')")
        assert it.execute("2 * 21") == 42
    end = rec.of("execute_end")[0]
    assert end["outputs"] is None and end["exception"] is info.value
    assert rec.of("startup_end")[0]["exception"] is None
    assert rec.of("shutdown_end")[0]["exception"] is None


@needs_sandbox
def test_tool_exception_reaches_callbacks_raw_and_the_code_as_runtime_error() -> None:
    rec = Recorder()
    error = ValueError("invalid tool input")

    def fail(x: int) -> int:
        raise error

    def add(a: int, b: int = 10) -> int:
        return a + b

    code = (
        "try:\n    fail(1)\nexcept RuntimeError as exc:\n    caught = str(exc)\n"
        "(caught, add(1, b=2), add(5))"
    )
    with PythonInterpreter(tools={"fail": fail, "add": add}, callbacks=[rec], timeout=30) as it:
        assert it.execute(code) == ["ValueError: invalid tool input", 3, 15]
        # too many positional arguments: a TypeError for the code, the tool never runs
        with pytest.raises(CodeExecutionError, match="TypeError: tool takes 2 positional"):
            it.execute("add(1, 2, 3)")
    starts, ends = rec.of("tool_start"), rec.of("tool_end")
    assert [s["inputs"] for s in starts] == [
        {"tool_name": "fail", "kwargs": {"x": 1}},
        {"tool_name": "add", "kwargs": {"a": 1, "b": 2}},
        {"tool_name": "add", "kwargs": {"a": 5}},
    ]
    assert ends[0]["exception"] is error and ends[0]["outputs"] is None
    assert [e["outputs"] for e in ends[1:]] == [3, 15]


@needs_sandbox
def test_a_tool_cannot_reenter_its_interpreter_and_nothing_hangs() -> None:
    holder: dict[str, PythonInterpreter] = {}

    def reenter() -> Any:
        return holder["it"].execute("1")

    async def later(n: int) -> int:
        await asyncio.sleep(0)
        return n * 2

    with PythonInterpreter(tools={"reenter": reenter, "later": later}, timeout=30) as it:
        holder["it"] = it
        with pytest.raises(CodeExecutionError, match="cannot execute recursively"):
            it.execute("reenter()")
        assert it.execute("later(n=4)") == 8  # an async tool is awaited on the host


@needs_sandbox
def test_an_internal_failure_is_terminal_without_shutdown_callbacks() -> None:
    rec = Recorder()
    it = PythonInterpreter(callbacks=[rec], timeout=30)
    it.start()
    assert it._proc is not None
    # the whole sandbox dies under the interpreter: bwrap and every process under it (killing
    # bwrap alone leaves the sandboxed Python alive until its parent-death signal lands, and it
    # could still answer)
    assert it.execute("0") == 0  # the sandbox is up (bwrap has started the Python under it)
    bwrap = psutil.Process(it._proc.process.pid)
    inside = bwrap.children(recursive=True)
    assert inside  # the sandboxed Python runs under bwrap
    for proc in [*inside, bwrap]:
        with contextlib.suppress(psutil.NoSuchProcess):  # bwrap may exit once its child is gone
            proc.kill()
    psutil.wait_procs(inside, timeout=10)
    it._proc.process.wait()
    with pytest.raises(CodeInterpreterError, match="PythonInterpreter failed") as info:
        it.execute("1")
    assert not isinstance(info.value, CodeExecutionError)
    assert rec.of("shutdown_start") == []  # ended internally, not shut down by the caller
    assert rec.of("execute_end")[-1]["exception"] is info.value
    with pytest.raises(CodeInterpreterError, match="shutdown"):
        it.execute("1")


# ---------------------------------------------------------------- the protocol, no sandbox
@dataclass
class Point:
    x: int
    y: int


class Model(BaseModel):
    name: str


def _responses(tool: Any) -> dict[str, Any]:
    it = PythonInterpreter(tools={"t": tool})
    writes: list[tuple[str, str]] = []
    it._write_message = lambda message, context: writes.append((message, context))  # type: ignore[method-assign]
    it._handle_tool_call({"id": 3, "params": {"name": "t", "kwargs": {}}})
    message, context = writes[0]
    assert context == "while returning a tool result"
    response: dict[str, Any] = json.loads(message)
    assert response["jsonrpc"] == "2.0" and response["id"] == 3
    return response


def test_tool_results_are_encoded_as_dspy_encodes_them() -> None:
    assert _responses(lambda: "hi")["result"] == {"value": "hi", "type": "string"}
    assert _responses(lambda: None)["result"] == {"value": "", "type": "string"}
    assert _responses(lambda: {"a": [1, 2]})["result"] == {"value": '{"a": [1, 2]}', "type": "json"}
    assert json.loads(_responses(lambda: Point(1, 2))["result"]["value"]) == {"x": 1, "y": 2}
    assert json.loads(_responses(lambda: Model(name="n"))["result"]["value"]) == {"name": "n"}
    assert _responses(lambda: float("nan"))["result"] == {"value": "nan", "type": "string"}
    error = _responses(lambda: [][1])["error"]
    assert error == {
        "code": -32005,
        "message": "list index out of range",
        "data": {"type": "IndexError"},
    }
    assert _responses(lambda: 1 / 0)["error"]["code"] == -32099  # not in DSPy's table


def test_unknown_tool_and_async_tool_through_invoke_tool() -> None:
    rec = Recorder()

    async def coro(n: int) -> int:
        return n + 1

    it = PythonInterpreter(tools={"coro": coro}, callbacks=[rec])
    with pytest.raises(CodeInterpreterError, match="Unknown tool: missing") as info:
        it.invoke_tool("missing", {})
    assert rec.of("tool_end")[0]["exception"] is info.value
    assert it.invoke_tool("coro", {"n": 1}) == 2

    async def inside_a_loop() -> Any:
        return it.invoke_tool("coro", {"n": 2})  # a running loop: run on a helper thread

    assert asyncio.run(inside_a_loop()) == 3
