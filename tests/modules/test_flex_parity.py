"""Native ``Flex`` against DSPy 3.4.1's ``dspy.Flex`` in process, on one ``LMServer``.

Both run their code in the same interpreter (DSPEx's sandbox, ``dspex.PythonInterpreter``: DSPy
takes any object with the CodeInterpreter shape; there is no Deno here), so a difference can
only come from the Flex itself: its baseline source, its facade, the predictors its host builds,
the output parsing. Each scenario checks the baseline ``module_src`` text, every request body
byte for byte, the predictions (values and types) or the same kind of failure, and that state
saved by one loads in the other.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, Optional

import pydantic
import pytest

import dspex
from dspex.errors import CodeInterpreterError
from dspex.modules.flex import Flex
from dspex.primitives.python_interpreter import PythonInterpreter
from dspex.testing import LMServer

dspy = pytest.importorskip("dspy")
# DSPy's Flex calls its LM through SandboxLM, a BaseLM wrapper DSPy's own LM layer warns about
pytestmark = [
    pytest.mark.dspy,
    pytest.mark.filterwarnings("ignore:Passing OpenAI-style message:DeprecationWarning"),
]

MODEL = "openai/gpt-4o-mini"


class Invoice(pydantic.BaseModel):
    qty: int
    unit: str


def lookup(query: str) -> str:
    """Look a query up in the catalog.

    More text that is not shown."""
    return f"found {query}"


def signatures(lib: Any) -> dict[str, Any]:
    class Echo(lib.Signature):
        """Echo the question as the answer."""

        q: str = lib.InputField()
        a: str = lib.OutputField()

    class Typed(lib.Signature):
        """Count and tag the text."""

        text: str = lib.InputField(desc="some text")
        count: int = lib.OutputField(desc="how many words")
        tags: list[str] = lib.OutputField()
        mood: Literal["good", "bad"] = lib.OutputField()
        # Optional[...], not `X | None`: under `from __future__ import annotations` DSPEx's
        # signatures read "str | None" as typing.Optional[str] (DSPy keeps types.UnionType),
        # a signature-layer difference that would show in the rendered spec.
        note: Optional[str] = lib.OutputField()  # noqa: UP045

    class Custom(lib.Signature):
        invoice: Invoice = lib.InputField()
        total: float = lib.OutputField()
        extra: dict[str, int] = lib.OutputField()

    return {
        "string": "question, context -> answer",
        "echo": Echo,
        "typed": Typed,
        "custom": Custom,
    }


def make(lib: Any, signature: Any, **kwargs: Any) -> Any:
    cls = Flex if lib is dspex else dspy.Flex
    return cls(signature, interpreter_factory=PythonInterpreter, **kwargs)


@pytest.mark.parametrize("name", ["string", "echo", "typed", "custom"])
def test_baseline_source_and_spec_match_dspy(name: str) -> None:
    ours = make(dspex, signatures(dspex)[name])
    theirs = make(dspy, signatures(dspy)[name])
    assert ours.module_src == theirs.module_src
    assert ours._flex_ctx.render_signature_spec() == theirs._flex_ctx.render_signature_spec()
    for sandboxed in (False, True):
        assert ours._flex_ctx.render_context_blurb(sandboxed) == theirs._flex_ctx.render_context_blurb(sandboxed)  # fmt: skip
    assert repr(ours) == repr(theirs)
    assert ours.dump_state() == theirs.dump_state()


def test_baseline_with_tools_matches_dspy() -> None:
    ours = make(dspex, "question -> answer", tools=[lookup])
    theirs = make(dspy, "question -> answer", tools=[lookup])
    assert ours.module_src == theirs.module_src
    assert "dspy.RLM(" in ours.module_src
    assert ours._flex_ctx.render_context_blurb(True) == theirs._flex_ctx.render_context_blurb(True)


MULTI_STEP = """
class SolveModule(dspy.Module):
    def __init__(self):
        super().__init__()
        self.extract = dspy.Predict(dspy.Signature("invoice_text: str -> qty: int, unit_price: float", "Read the invoice."))
        self.explain = dspy.ChainOfThought("qty: int, unit_price: float -> summary")

    def forward(self, **inputs):
        import re
        text = inputs["question"].strip()
        parsed = self.extract(invoice_text=text)
        total = int(parsed.qty) * float(parsed.unit_price)
        words = len(re.findall(r"\\w+", text))
        shout = dspy.Predict("summary -> loud")(summary=self.explain(qty=parsed.qty, unit_price=parsed.unit_price).summary)
        return dspy.Prediction(answer=f"{total:.2f}|{words}|{shout.loud}")
""".strip()


BROKEN_OUTPUT = """
class BrokenModule(dspy.Module):
    def __init__(self):
        super().__init__()
        self.p = dspy.Predict("question -> answer")

    def forward(self, **inputs):
        out = self.p(question=inputs["question"])
        return dspy.Prediction(wrong=out.answer)
""".strip()

TWO_CALLS = """
class TwiceModule(dspy.Module):
    def __init__(self):
        super().__init__()
        self.p = dspy.Predict("question -> answer")

    def forward(self, **inputs):
        first = self.p(question=inputs["question"])
        second = self.p(question=first.answer)
        return dspy.Prediction(answer=second.answer)
""".strip()


def run(server: LMServer, lib: Any, build: Any, inputs: dict[str, Any], replies: list[Any]) -> tuple[list[bytes], Any, BaseException | None]:  # fmt: skip
    server.clear()
    server.reply(*replies)
    lm = lib.LM(MODEL, api_base=server.url, api_key="k", cache=False, num_retries=0)
    program = build(lib)
    prediction, error = None, None
    with lib.context(lm=lm):
        try:
            prediction = program(**inputs)
        except Exception as exc:
            error = exc
    return [r.body for r in server.requests], prediction, error


def compare(server: LMServer, build: Any, inputs: dict[str, Any], replies: list[Any]) -> tuple[Any, Any]:  # fmt: skip
    ours = run(server, dspex, build, inputs, replies)
    theirs = run(server, dspy, build, inputs, replies)
    assert len(ours[0]) == len(theirs[0]), (ours[2], theirs[2])
    for i, (a, b) in enumerate(zip(ours[0], theirs[0], strict=True)):
        assert a == b, f"request {i} differs:\n{a!r}\n{b!r}"
    if theirs[2] is not None:
        assert ours[2] is not None, f"DSPy raised {theirs[2]!r}, native returned {ours[1]!r}"
        # DSPy's failure is its own CodeInterpreterError, or the shared interpreter's
        assert isinstance(theirs[2], dspy.CodeInterpreterError | CodeInterpreterError), theirs[2]
        assert isinstance(ours[2], CodeInterpreterError), ours[2]
        return ours[2], theirs[2]
    assert ours[2] is None, f"native raised {ours[2]!r}"
    mine, other = dict(ours[1].items()), dict(theirs[1].items())
    assert mine == other
    assert {k: type(v) for k, v in mine.items()} == {k: type(v) for k, v in other.items()}
    return ours[1], theirs[1]


def test_baseline_forward_matches_dspy(server: LMServer) -> None:
    ours, _ = compare(
        server,
        lambda lib: make(lib, signatures(lib)["echo"]),
        {"q": "hello"},
        [{"a": "hi there"}],
    )
    assert ours.a == "hi there"


def test_typed_baseline_forward_matches_dspy(server: LMServer) -> None:
    reply = {"count": "3", "tags": '["x", "y"]', "mood": "good", "note": "fine"}
    ours, _ = compare(
        server, lambda lib: make(lib, signatures(lib)["typed"]), {"text": "a b c"}, [reply]
    )
    assert ours.count == 3 and ours.tags == ["x", "y"] and ours.mood == "good"


def test_custom_type_input_matches_dspy(server: LMServer) -> None:
    ours, _ = compare(
        server,
        lambda lib: make(lib, signatures(lib)["custom"]),
        {"invoice": Invoice(qty=2, unit="kg")},
        [{"total": "4.5", "extra": '{"a": 1}'}],
    )
    assert ours.total == 4.5 and ours.extra == {"a": 1}


def test_multi_step_code_matches_dspy(server: LMServer) -> None:
    def build(lib: Any) -> Any:
        flex = make(lib, "question -> answer")
        flex._bind_code(MULTI_STEP)
        return flex

    replies = [
        {"qty": "3", "unit_price": "2.5"},
        {"reasoning": "three at 2.5", "summary": "seven fifty"},
        {"loud": "SEVEN FIFTY"},
    ]
    ours, _ = compare(server, build, {"question": "  3 widgets at 2.50 each "}, replies)
    assert ours.answer == "7.50|6|SEVEN FIFTY"


@pytest.mark.parametrize(
    ("source", "budget", "replies"),
    [
        (BROKEN_OUTPUT, 100, [{"answer": "x"}]),
        (TWO_CALLS, 1, [{"answer": "x"}, {"answer": "y"}]),
    ],
    ids=["missing-output", "call-budget"],
)
def test_failures_match_dspy(server: LMServer, source: str, budget: int, replies: list[Any]) -> None:  # fmt: skip
    def build(lib: Any) -> Any:
        flex = make(lib, "question -> answer", max_predictor_calls=budget)
        flex._bind_code(source)
        return flex

    ours, theirs = compare(server, build, {"question": "q"}, replies)
    marker = "missing required output" if source is BROKEN_OUTPUT else "predictor-call budget (1)"
    assert marker in str(ours) and marker in str(theirs)


def _program(lib: Any) -> Any:
    class Program(lib.Module):
        def __init__(self) -> None:
            super().__init__()
            self.sibling = lib.Predict("x -> y")
            self.flex = make(lib, signatures(lib)["echo"])

        def forward(self, **kwargs: Any) -> Any:
            return self.flex(**kwargs)

    return Program()


@pytest.mark.parametrize("direction", ["dspy-to-dspex", "dspex-to-dspy"])
def test_saved_state_loads_across(tmp_path: Path, direction: str) -> None:
    source, target = (dspy, dspex) if direction == "dspy-to-dspex" else (dspex, dspy)
    program = _program(source)
    program.flex._bind_code(TWO_CALLS)
    program.flex.set_lm(source.LM(MODEL, temperature=0.3))
    program.sibling.signature = program.sibling.signature.with_instructions("tuned sibling")
    path = tmp_path / "program.json"
    program.save(path)

    loaded = _program(target)
    assert loaded.flex.module_src != TWO_CALLS
    loaded.load(path)
    assert loaded.flex.module_src == TWO_CALLS
    assert loaded.flex.get_lm().model == MODEL
    assert loaded.flex.get_lm().kwargs["temperature"] == 0.3
    assert loaded.sibling.signature.instructions == "tuned sibling"
    # the state each side dumps for the same program is the same JSON
    mine = json.loads(json.dumps(loaded.dump_state(), default=str))
    theirs = json.loads(json.dumps(program.dump_state(), default=str))
    assert mine["flex"]["module_src"] == theirs["flex"]["module_src"]
    # DSPy's LM dumps `max_tokens: None` that DSPEx's LM leaves out (an LM-layer difference)
    assert {k: v for k, v in mine["flex"]["lm"].items() if v is not None} == {
        k: v for k, v in theirs["flex"]["lm"].items() if v is not None
    }


AGENT = """
class AgentModule(dspy.Module):
    def __init__(self):
        super().__init__()
        self.agent = dspy.ReActV2("question -> answer", tools=[lookup], max_iters=3)

    def forward(self, **inputs):
        direct = lookup(query="direct")
        out = self.agent(question=inputs["question"])
        turns = len(out.history["messages"])
        return dspy.Prediction(answer=f"{out.answer} / {direct} / {turns}")
""".strip()


def test_tools_and_a_react_v2_source_match_dspy(server: LMServer) -> None:
    def build(lib: Any) -> Any:
        flex = make(lib, "question -> answer", tools=[lookup])
        flex._bind_code(AGENT)
        return flex

    def turn(name: str, args: dict[str, Any], note: str) -> dict[str, Any]:
        return {"next_thought": note, "tool_calls": {"tool_calls": [{"name": name, "args": args}]}}

    replies = [
        turn("lookup", {"query": "cats"}, "look it up"),
        turn("submit", {"answer": "cats found"}, "done"),
    ]
    ours, _ = compare(server, build, {"question": "cats?"}, replies)
    assert ours.answer == "cats found / found direct / 2"
