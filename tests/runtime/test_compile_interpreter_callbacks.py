"""Compile and interpreter callbacks: which hooks fire, once per call, nested by call id."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import dspex
from dspex.teleprompt import LabeledFewShot
from dspex.teleprompt.teleprompt import Teleprompter
from dspex.utils.callback import ACTIVE_CALL_ID, BaseCallback, with_callbacks


class Recorder(BaseCallback):
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str | None, Any]] = []

    def _add(self, hook: str, call_id: str, payload: Any) -> None:
        self.events.append((hook, call_id, ACTIVE_CALL_ID.get(), payload))

    def on_compile_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._add("compile_start", call_id, inputs)

    def on_compile_end(self, call_id: str, outputs: Any, exception: Any = None) -> None:
        self._add("compile_end", call_id, exception or outputs)

    def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._add("module_start", call_id, inputs)

    def on_module_end(self, call_id: str, outputs: Any, exception: Any = None) -> None:
        self._add("module_end", call_id, outputs)

    def on_interpreter_startup_start(self, call_id: str, instance: Any, inputs: Any) -> None:
        self._add("startup_start", call_id, inputs)

    def on_interpreter_startup_end(self, call_id: str, outputs: Any, exception: Any = None) -> None:
        self._add("startup_end", call_id, outputs)

    def on_interpreter_execute_start(self, call_id: str, instance: Any, inputs: Any) -> None:
        self._add("execute_start", call_id, inputs)

    def on_interpreter_execute_end(self, call_id: str, outputs: Any, exception: Any = None) -> None:
        self._add("execute_end", call_id, outputs)

    def on_interpreter_tool_call_start(self, call_id: str, instance: Any, inputs: Any) -> None:
        self._add("tool_start", call_id, inputs)

    def on_interpreter_tool_call_end(
        self, call_id: str, outputs: Any, exception: Any = None
    ) -> None:
        self._add("tool_end", call_id, exception or outputs)


def hooks(recorder: Recorder) -> list[str]:
    return [event[0] for event in recorder.events]


def test_a_subclass_compile_fires_one_pair_with_its_bound_inputs() -> None:
    class Opt(Teleprompter):
        def compile(self, student: Any, *, trainset: list[Any], teacher: Any = None) -> Any:
            return student

    recorder, student = Recorder(), dspex.Module()
    with dspex.context(callbacks=[recorder]):
        assert Opt().compile(student, trainset=[1]) is student
    (start, end) = recorder.events
    assert start[0] == "compile_start" and start[3] == {
        "student": student, "trainset": [1], "teacher": None,
    }  # fmt: skip
    assert end[:3] == ("compile_end", start[1], None) and end[3] is student


def test_super_compile_is_one_call_and_errors_are_reported() -> None:
    boom = ValueError("boom")

    class Base(Teleprompter):
        def compile(self, student: Any, *, trainset: list[Any]) -> Any:
            if not trainset:
                raise boom
            return student

    class Child(Base):
        def compile(self, student: Any, *, trainset: list[Any]) -> Any:
            return super().compile(student, trainset=trainset)

    recorder = Recorder()
    with dspex.context(callbacks=[recorder]):
        Child().compile(dspex.Module(), trainset=[1])
        with pytest.raises(ValueError):
            Child().compile(dspex.Module(), trainset=[])
    assert hooks(recorder) == ["compile_start", "compile_end"] * 2
    assert recorder.events[3][3] is boom


def test_nested_optimizers_and_modules_keep_their_parents() -> None:
    class Student(dspex.Module):
        def forward(self, value: Any) -> Any:
            return dspex.Prediction(value=value)

    class Inner(Teleprompter):
        def compile(self, student: Any, *, trainset: list[Any]) -> Any:
            student(value=trainset[0])
            return student

    class Outer(Teleprompter):
        def compile(self, student: Any, *, trainset: list[Any]) -> Any:
            return Inner().compile(student, trainset=trainset)

    recorder = Recorder()
    with dspex.context(callbacks=[recorder]):
        Outer().compile(Student(), trainset=["v"])
    assert hooks(recorder) == [
        "compile_start", "compile_start", "module_start", "module_end", "compile_end",
        "compile_end",
    ]  # fmt: skip
    outer, inner, module = recorder.events[0], recorder.events[1], recorder.events[2]
    assert outer[2] is None and inner[2] == outer[1] and module[2] == inner[1]


async def test_the_same_optimizer_in_a_child_task_nests() -> None:
    class Opt(Teleprompter):
        async def compile(self, student: Any, *, trainset: list[Any], child: bool = False) -> Any:
            if child:
                return student
            return await asyncio.create_task(self.compile(student, trainset=trainset, child=True))

    recorder = Recorder()
    with dspex.context(callbacks=[recorder]):
        await Opt().compile(dspex.Module(), trainset=[])
    assert hooks(recorder) == ["compile_start", "compile_start", "compile_end", "compile_end"]
    assert recorder.events[1][2] == recorder.events[0][1]


def test_native_optimizers_report_their_compile() -> None:
    recorder, student = Recorder(), dspex.Module()
    with dspex.context(callbacks=[recorder]):
        LabeledFewShot(k=0).compile(student, trainset=[])
    assert hooks(recorder) == ["compile_start", "compile_end"]
    assert recorder.events[0][3] == {"student": student, "trainset": [], "sample": True}


class ToyInterpreter:
    """The shape of DSPy's CodeInterpreter protocol: ``tools`` and start/execute/shutdown."""

    def __init__(self) -> None:
        self.tools = {"double": lambda x: 2 * x}

    @with_callbacks
    def start(self) -> None:
        pass

    @with_callbacks
    def execute(self, code: str, variables: dict[str, Any] | None = None) -> Any:
        self.start()
        return self.invoke_tool("double", {"x": len(code)})

    @with_callbacks
    def invoke_tool(self, tool_name: str, kwargs: dict[str, Any]) -> Any:
        if tool_name not in self.tools:
            raise KeyError(tool_name)
        return self.tools[tool_name](**kwargs)

    @with_callbacks
    def describe(self) -> str:
        return "toy"

    def shutdown(self) -> None:
        pass


def test_interpreter_shaped_objects_fire_interpreter_hooks() -> None:
    recorder, interp = Recorder(), ToyInterpreter()
    with dspex.context(callbacks=[recorder]):
        assert interp.execute("abc", {"y": 1}) == 6
        with pytest.raises(KeyError):
            interp.invoke_tool("nope", {})
        assert interp.describe() == "toy"  # no hook of its own: the call runs, no event
    assert hooks(recorder) == [
        "execute_start", "startup_start", "startup_end", "tool_start", "tool_end",
        "execute_end", "tool_start", "tool_end",
    ]  # fmt: skip
    execute = recorder.events[0]
    assert execute[3] == {"code": "abc", "variables": {"y": 1}}
    assert recorder.events[1][2] == execute[1] and recorder.events[3][2] == execute[1]
    assert recorder.events[3][3] == {"tool_name": "double", "kwargs": {"x": 3}}
    assert recorder.events[5][3] == 6
    assert isinstance(recorder.events[7][3], KeyError)
