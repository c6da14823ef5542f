"""``dspex.Flex``: binding, state, forwards in DSPEx's sandbox, and what the bridge refuses.

Forwards run for real: the code runs in ``dspex.PythonInterpreter`` (bubblewrap sandbox) and
its predictors call an ``LMServer`` or a ``DummyLM`` on the host.
"""

from __future__ import annotations

import asyncio
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import dspex
from dspex.errors import (
    CodeInterpreterError,
    FlexBridgeError,
    FlexBudgetExceeded,
    FlexInputError,
    FlexSourceError,
    LMError,
)
from dspex.modules.flex import Flex
from dspex.modules.flex.bridge import module_class_name
from dspex.modules.flex.context import render_annotation, strip_code_fences
from dspex.primitives.code_interpreter import FinalOutput
from dspex.testing import Fault, LMServer
from dspex.testing.dummy import DummyLM

ECHO = textwrap.dedent(
    """
    class EchoModule(dspy.Module):
        def __init__(self):
            super().__init__()
            self.echo = dspy.Predict("q -> a")

        def forward(self, q):
            out = self.echo(q=q)
            return dspy.Prediction(a=out.a)
    """
).strip()


class Echo(dspex.Signature):
    """Echo the question as the answer."""

    q: str = dspex.InputField()
    a: str = dspex.OutputField()


def flex_with(source: str, signature: Any = Echo, **kwargs: Any) -> Flex:
    flex = Flex(signature, **kwargs)
    flex._bind_code(textwrap.dedent(source).strip())
    return flex


class InHostInterpreter:
    """A minimal interpreter running code in this process (the CodeInterpreter shape): tools
    are plain globals of its namespace, the last expression's value is the result."""

    def __init__(self) -> None:
        self.tools: dict[str, Any] = {}
        self.namespace: dict[str, Any] = {}

    def start(self) -> None:
        pass

    def execute(self, code: str, variables: dict[str, Any] | None = None) -> Any:
        import ast

        self.namespace.update(self.tools)
        self.namespace.update(variables or {})
        tree = ast.parse(code)
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        exec(compile(tree, "<in-host>", "exec"), self.namespace)
        if last is None:
            return None
        return eval(compile(ast.Expression(last.value), "<in-host>", "eval"), self.namespace)

    def shutdown(self) -> None:
        pass


# ---------------------------------------------------------------------------- binding & state


def test_baseline_is_one_predict_and_nothing_is_written(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    flex = Flex(Echo)
    assert flex.module_src is not None and "dspy.Predict(" in flex.module_src
    assert module_class_name(flex.module_src) == "EchoModule"
    assert list(tmp_path.iterdir()) == []
    assert flex.named_predictors() == []
    assert repr(flex) == "Flex(Echo)"


def test_bind_checks_the_source_without_running_it() -> None:
    flex = Flex(Echo)
    with pytest.raises(SyntaxError):
        flex._bind_code("class Broken(:\n    pass")
    with pytest.raises(FlexSourceError, match=r"must define a dspy\.Module subclass"):
        flex._bind_code("x = 1")
    assert "self.predict" in (flex.module_src or "")  # a refused bind changes nothing
    flex._bind_code("import os\nos.system('false')\n" + ECHO)  # parsed only, nothing ran
    assert module_class_name(flex.module_src or "") == "EchoModule"


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(TypeError, match="ownership is ambiguous"):
        Flex(Echo, interpreter_factory=InHostInterpreter())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_predictor_calls"):
        Flex(Echo, max_predictor_calls=-1)
    with pytest.raises(ValueError, match="valid Python identifier"):
        Flex(Echo, tools=[lambda x: x])
    with pytest.raises(ValueError, match="reserved"):
        Flex(Echo, tools=[dspex.Tool(lambda x: x, name="_dspy_x")])


def test_state_round_trip_nested_and_flat_layout(tmp_path: Path) -> None:
    class Program(dspex.Module):
        def __init__(self) -> None:
            super().__init__()
            self.sibling = dspex.Predict("x -> y")
            self.flex = Flex(Echo)

        def forward(self, **kwargs: Any) -> Any:
            return self.flex(**kwargs)

    program = Program()
    program.flex._bind_code(ECHO)
    program.flex.set_lm(dspex.LM("openai/gpt-4o-mini"))
    state = program.dump_state()
    assert sorted(state) == ["flex", "sibling"]
    assert (
        state["flex"]["module_src"] == ECHO and state["flex"]["lm"]["model"] == "openai/gpt-4o-mini"
    )
    program.save(tmp_path / "p.json")
    reloaded = Program()
    reloaded.load(tmp_path / "p.json")
    assert reloaded.flex.module_src == ECHO
    assert reloaded.flex.get_lm().model == "openai/gpt-4o-mini"
    reloaded.flex.load_state({"module_src": None, "lm": None})  # no source keeps the bound one
    assert reloaded.flex.module_src == ECHO and reloaded.flex.get_lm() is None
    with pytest.raises(dspex.StateError):
        reloaded.flex.load_state("nope")  # type: ignore[arg-type]
    fresh = program.reset_copy()
    assert fresh.flex.module_src == ECHO and fresh.flex.get_lm() is None
    assert program.flex.get_lm() is not None


def test_router_builds_the_native_flex() -> None:
    flex = dspex.Flex(Echo)
    assert type(flex) is Flex
    assert dspex.registry().__class__ is not None
    from dspex.predict.flex.flex import Flex as PathFlex

    assert PathFlex is Flex


# ---------------------------------------------------------------------------- forwards


def test_forward_runs_in_the_sandbox_and_attaches_nothing() -> None:
    program = flex_with(ECHO)
    with dspex.context(lm=DummyLM([{"a": "from-context"}])):
        assert program(q="hello").a == "from-context"
    assert not hasattr(program, "echo")
    assert [n for n, _ in program.named_parameters()] == ["self"]


def test_flex_lm_wins_over_the_context(server: LMServer) -> None:
    server.clear()
    server.reply({"a": "own lm"})
    program = flex_with(ECHO)
    program.set_lm(dspex.LM("openai/gpt-4o-mini", api_base=server.url, api_key="k", cache=False))
    with dspex.context(lm=DummyLM([{"a": "context lm"}])):
        assert program(q="hi").a == "own lm"
    assert len(server.requests) == 1


def test_save_program_then_forward(tmp_path: Path) -> None:
    program = flex_with(ECHO)
    program.save(tmp_path / "prog", save_program=True)
    loaded = dspex.load(str(tmp_path / "prog"), allow_pickle=True)
    assert loaded.module_src == ECHO and loaded._bridge._flex is loaded
    with dspex.context(lm=DummyLM([{"a": "echoed"}])):
        assert loaded(q="x").a == "echoed"


def test_code_uses_python_tools_and_anonymous_predictors(server: LMServer) -> None:
    def shout(text: str) -> str:
        """Upper-case a text."""
        return text.upper()

    source = """
    class Mixed(dspy.Module):
        def __init__(self):
            super().__init__()

        def forward(self, **inputs):
            import json
            loud = shout(text=inputs["q"])
            out = dspy.Predict(dspy.Signature("q -> a", "Answer briefly."))(q=loud)
            return dspy.Prediction(a=json.dumps([loud, out.a, out["a"] == out.get("a")]))
    """
    program = flex_with(source, tools=[shout])
    server.clear()
    server.reply({"a": "ok"})
    lm = dspex.LM("openai/gpt-4o-mini", api_base=server.url, api_key="k", cache=False)
    with dspex.context(lm=lm):
        assert program(q="hey").a == '["HEY", "ok", true]'
    # the bridged predictor saw the tool's result and the instructions from the code
    messages = server.requests[-1].json["messages"]
    assert "HEY" in messages[-1]["content"] and "Answer briefly." in messages[0]["content"]


def test_outputs_are_parsed_to_the_signature_types() -> None:
    class Count(dspex.Signature):
        text: str = dspex.InputField()
        n: int = dspex.OutputField()
        words: list[str] = dspex.OutputField()
        note: str | None = dspex.OutputField()

    source = """
    class CountModule(dspy.Module):
        def forward(self, **inputs):
            return dspy.Prediction(n="3", words=inputs["text"].split())
    """
    pred = flex_with(source, Count)(text="a b c")
    assert pred.n == 3 and pred.words == ["a", "b", "c"] and pred.note is None
    bad = """
    class Bad(dspy.Module):
        def forward(self, **inputs):
            return dspy.Prediction(n="many", words=[])
    """
    with pytest.raises(FlexSourceError, match="output field 'n'") as info:
        flex_with(bad, Count)(text="x")
    assert info.value.field == "n"
    plain = """
    class Plain(dspy.Module):
        def forward(self, **inputs):
            return 42
    """
    with pytest.raises(FlexSourceError, match=r"must return a dspy\.Prediction"):
        flex_with(plain, Count)(text="x")


def test_async_and_parallel_forwards_are_isolated() -> None:
    program = flex_with(ECHO)
    lm = DummyLM([{"a": f"r{i}"} for i in range(4)])
    with dspex.context(lm=lm):
        results = program.batch(
            [dspex.Example(q=f"q{i}").with_inputs("q") for i in range(3)], num_threads=3
        )
        assert sorted(r.a for r in results) == ["r0", "r1", "r2"]
        assert asyncio.run(program.acall(q="last")).a == "r3"
    assert not hasattr(program, "echo")


def test_in_host_interpreter_leaves_the_host_dspy_alone() -> None:
    source = """
    class Imports(dspy.Module):
        def __init__(self):
            super().__init__()
            self.p = dspy.Predict("q -> a")

        def forward(self, **inputs):
            import dspy as facade
            assert facade is dspy
            try:
                import dspy.predict as _sub
            except ModuleNotFoundError:
                pass
            else:
                raise AssertionError("dspy.predict resolved in the sandbox")
            return facade.Prediction(a=self.p(q=inputs["q"]).a)
    """
    before = sys.modules.get("dspy")
    made: list[InHostInterpreter] = []

    def factory() -> InHostInterpreter:
        made.append(InHostInterpreter())
        return made[-1]

    with dspex.context(lm=DummyLM([{"a": "in host"}, {"a": "configured"}])):
        assert flex_with(source, interpreter_factory=factory)(q="x").a == "in host"
        assert sys.modules.get("dspy") is before
        with dspex.context(interpreter_factory=factory):  # the configured factory is used
            assert flex_with(source)(q="x").a == "configured"
    assert len(made) == 2 and sys.modules.get("dspy") is before


# ---------------------------------------------------------------------------- refusals & errors


def test_positional_inputs_are_a_type_error() -> None:
    with pytest.raises(FlexInputError, match="keyword inputs only") as info:
        Flex(Echo)("hello")
    assert isinstance(info.value, TypeError)


@pytest.mark.parametrize(
    ("ctor", "match"),
    [
        ('dspy.Predict("q -> a", api_base="http://elsewhere")', r"LM option\(s\) \['api_base'\]"),
        (
            'dspy.ProgramOfThought("q -> a", interpreter_factory="x")',
            "cannot choose its interpreter_factory",
        ),
        ('dspy.ReActV2("q -> a", tools=[helper])', "not provided to the host module's tools"),
        ('dspy.RLM("q -> a")', "no native DSPEx implementation"),
    ],
    ids=["lm-option", "interpreter", "unknown-tool", "rlm"],
)
def test_bridge_refusals_surface_as_themselves(ctor: str, match: str) -> None:
    source = f"""
    class Refused(dspy.Module):
        def __init__(self):
            super().__init__()

            def helper(x):
                return x

            self.p = {ctor}

        def forward(self, **inputs):
            return dspy.Prediction(a=self.p(q=inputs["q"]).a)
    """
    with dspex.context(lm=DummyLM([{"a": "never"}])), pytest.raises(FlexBridgeError, match=match):
        flex_with(source)(q="x")


def test_call_time_lm_choices_are_refused() -> None:
    source = """
    class CallOptions(dspy.Module):
        def __init__(self):
            super().__init__()
            self.p = dspy.Predict("q -> a", temperature=0.5)

        def forward(self, **inputs):
            return dspy.Prediction(a=self.p(q=inputs["q"], config={"base_url": "http://x"}).a)
    """
    with dspex.context(lm=DummyLM([{"a": "never"}])), pytest.raises(FlexBridgeError, match="base_url"):  # fmt: skip
        flex_with(source)(q="x")


def test_call_budget() -> None:
    source = """
    class Loop(dspy.Module):
        def __init__(self):
            super().__init__()
            self.p = dspy.Predict("q -> a")

        def forward(self, **inputs):
            for _ in range(5):
                inputs = {"q": self.p(**inputs).a}
            return dspy.Prediction(a=inputs["q"])
    """
    lm = DummyLM([{"a": f"r{i}"} for i in range(5)])
    with dspex.context(lm=lm), pytest.raises(FlexBudgetExceeded, match=r"budget \(2\)") as info:
        flex_with(source, max_predictor_calls=2)(q="x")
    assert info.value.budget == 2
    with dspex.context(lm=DummyLM([{"a": f"r{i}"} for i in range(5)])):
        assert flex_with(source, max_predictor_calls=None)(q="x").a == "r4"


def test_lm_errors_reach_the_caller_as_lm_errors(server: LMServer) -> None:
    server.clear()
    server.fault(Fault(status=401, times=1))
    lm = dspex.LM("openai/gpt-4o-mini", api_base=server.url, api_key="k", cache=False, num_retries=0)  # fmt: skip
    with dspex.context(lm=lm), pytest.raises(LMError):
        flex_with(ECHO)(q="x")


def test_code_may_catch_a_host_error_and_go_on() -> None:
    source = """
    class Careful(dspy.Module):
        def __init__(self):
            super().__init__()
            self.p = dspy.Predict("q -> a", api_key="stolen")

        def forward(self, **inputs):
            return dspy.Prediction(a="fallback")
    """
    with pytest.raises(FlexBridgeError):  # construction happens in __init__: refused
        flex_with(source)(q="x")
    caught = """
    class Careful(dspy.Module):
        def forward(self, **inputs):
            try:
                dspy.Predict("q -> a", api_key="stolen")(q="x")
            except Exception as exc:
                return dspy.Prediction(a="caught " + type(exc).__name__)
            return dspy.Prediction(a="no")
    """
    assert flex_with(caught)(q="x").a == "caught RuntimeError"


def test_code_errors_are_code_interpreter_errors() -> None:
    source = """
    class Raises(dspy.Module):
        def forward(self, **inputs):
            raise ValueError("bad input " + inputs["q"])
    """
    with pytest.raises(CodeInterpreterError, match="bad input x"):
        flex_with(source)(q="x")


def test_interpreter_that_returns_nothing_is_reported() -> None:
    class Silent(InHostInterpreter):
        def execute(self, code: str, variables: dict[str, Any] | None = None) -> Any:
            return FinalOutput("nope") if variables else None

    with pytest.raises(FlexSourceError, match="no serializable result"):
        flex_with(ECHO, interpreter_factory=Silent)(q="x")


# ---------------------------------------------------------------------------- helpers


def test_annotations_and_fences() -> None:
    from typing import Literal, Optional

    assert render_annotation(Optional[list[int]]) == "list[int] | None"  # noqa: UP045
    assert render_annotation(Literal["a", 1]) == "Literal['a', 1]"
    assert render_annotation(dict[str, tuple[int, ...]]) == "dict[str, tuple[int, ...]]"
    with pytest.raises(ValueError, match="no name"):
        render_annotation(Echo)
    assert render_annotation(Echo, {"Echo": Echo}) == "Echo"
    assert strip_code_fences("```python\n\tx = 1\n```") == "x = 1"
    assert strip_code_fences(None) == ""
