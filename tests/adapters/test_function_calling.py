"""Native function calling and structured outputs vs DSPy 3.4.1.

A generated corpus (520 cases: tool sets, signatures, adapters, native on/off, models) is
planned by both libraries in process: the request options DSPy's adapter prepares (``tools``,
``tool_choice``, ``parallel_tool_calls``, ``response_format``) and the messages must be equal,
and provider-shaped replies with tool calls must parse to equal values. A few cases also go
over the wire (LMServer) to check ``response_format`` as litellm actually sends it.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from typing import Any, Literal

import pydantic
import pytest

import dspex
from dspex.adapters.base import LMRequest
from dspex.testing import LMServer
from tests.adapters.corpus_types import TOOL_FUNCS

dspy = pytest.importorskip("dspy")
pytestmark = pytest.mark.dspy
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


class Filter(pydantic.BaseModel):
    field: str
    values: list[str] = []
    exact: bool | None = None


def query_db(table: str, filters: list[Filter], limit: int = 10) -> str:
    """Query a table."""
    return table


def send_email(to: str, subject: str, body: str = "", urgent: bool = False) -> str:
    return to


ALL_TOOLS = [*TOOL_FUNCS, query_db, send_email]
MODELS = ["openai/gpt-4o-mini", "openai/test", "openai/gpt-4", "openai/gpt-4.1"]
EXTRA_OUTPUTS: list[tuple[str, Any]] = [
    ("answer", str),
    ("score", int),
    ("label", Literal["a", "b"]),
    ("filters", list[Filter]),
    ("meta", dict[str, int]),
    ("maybe", str | None),
]


@dataclass
class FCCase:
    seed: int
    tools: list[Any]
    outputs: list[tuple[str, Any]]
    with_calls: bool
    adapter: str
    native: bool
    parallel: bool | None
    model: str
    calls: list[dict[str, Any]]

    def signature(self, lib: Any) -> Any:
        spec: dict[str, Any] = {
            "question": (str, lib.InputField()),
            "tools": (list[lib.Tool], lib.InputField()),
        }
        for name, ann in self.outputs:
            spec[name] = (ann, lib.OutputField())
        if self.with_calls:
            spec["next_calls"] = (lib.ToolCalls, lib.OutputField())
        return lib.Signature(spec, "Use the tools to answer.")

    def adapter_of(self, lib: Any) -> Any:
        kwargs: dict[str, Any] = {"use_native_function_calling": self.native}
        if self.parallel is not None:
            kwargs["parallel_tool_calls"] = self.parallel
        return getattr(lib, self.adapter)(**kwargs)

    def inputs(self, lib: Any) -> dict[str, Any]:
        return {"question": "what now?", "tools": [lib.Tool(t) for t in self.tools]}

    def reply(self) -> dict[str, Any]:
        """A provider-shaped completion: maybe text, tool calls in OpenAI's wire shape."""
        r = random.Random(self.seed)
        text = None
        if self.outputs and r.random() < 0.5:
            text = json.dumps({name: _sample(ann, r) for name, ann in self.outputs})
            if self.adapter != "JSONAdapter":
                text = (
                    "\n\n".join(
                        f"[[ ## {n} ## ]]\n{_plain(_sample(a, random.Random(self.seed)))}"
                        for n, a in self.outputs
                    )
                    + "\n\n[[ ## completed ## ]]"
                )
        return {
            "text": text,
            "tool_calls": [
                {
                    "id": f"call_{i}",
                    "type": "function",
                    "function": {"name": c["name"], "arguments": json.dumps(c["args"])},
                }
                for i, c in enumerate(self.calls)
            ],
        }


def _sample(ann: Any, r: random.Random) -> Any:
    if ann is int:
        return r.randint(0, 9)
    if ann == Literal["a", "b"]:
        return r.choice(["a", "b"])
    if ann == list[Filter]:
        return [{"field": "f", "values": ["x"]}]
    if ann == dict[str, int]:
        return {"k": 1}
    return "text value"


def _plain(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def make_fc_case(seed: int) -> FCCase:
    r = random.Random(seed)
    tools = r.sample(ALL_TOOLS, r.randint(1, len(ALL_TOOLS)))
    calls = [
        {"name": t.__name__, "args": {"x": r.randint(0, 5)} if t.__name__ == "add" else {"q": "v"}}
        for t in r.sample(tools, r.randint(1, len(tools)))
    ]
    return FCCase(
        seed=seed,
        tools=tools,
        outputs=r.sample(EXTRA_OUTPUTS, r.randint(0, 2)),
        with_calls=r.random() < 0.85,
        adapter=r.choice(["ChatAdapter", "JSONAdapter"]),
        native=r.random() < 0.7,
        parallel=r.choice([None, None, True, False]),
        model=r.choice(MODELS),
        calls=calls,
    )


FC_CASES = [make_fc_case(seed) for seed in range(520)]


def _dspy_plan(case: FCCase) -> tuple[Any, Any, dict[str, Any]]:
    """What DSPy's adapter sends: (rendered signature, messages, lm_kwargs)."""
    lm = dspy.LM(case.model, api_key="k", cache=False)
    adapter = case.adapter_of(dspy)
    sig, inputs = case.signature(dspy), case.inputs(dspy)
    lm_kwargs: dict[str, Any] = {}
    if case.adapter == "JSONAdapter":
        adapter._prepare_response_format(lm, lm_kwargs, sig)
    rendered = adapter._call_preprocess(lm, lm_kwargs, sig, inputs)
    messages = adapter.format(rendered, [], inputs)
    if lm_kwargs.get("parallel_tool_calls") is not None:
        lm_kwargs.setdefault("tool_choice", "auto")
    fmt = lm_kwargs.get("response_format")
    if isinstance(fmt, type):  # a pydantic model: what litellm puts on the wire for it
        from litellm.utils import type_to_response_format_param

        lm_kwargs["response_format"] = type_to_response_format_param(fmt)
    return rendered, messages, lm_kwargs


def _dspex_plan(case: FCCase) -> tuple[Any, LMRequest]:
    lm = dspex.LM(case.model, api_key="k", cache=False)
    flow = case.adapter_of(dspex).flow({}, case.signature(dspex), [], case.inputs(dspex), lm)
    return flow, next(flow)


def _values(result: list[dict[str, Any]]) -> Any:
    return [
        {k: v.model_dump() if hasattr(v, "model_dump") else v for k, v in d.items()} for d in result
    ]


def _check(case: FCCase) -> None:
    try:
        rendered, messages, lm_kwargs = _dspy_plan(case)
    except ValueError as exc:  # DSPy refuses the plan: so must we
        with pytest.raises(ValueError, match="did not provide any tools"):
            _dspex_plan(case)
        assert "did not provide any tools" in str(exc)
        return
    flow, request = _dspex_plan(case)
    assert json.dumps(request.messages) == json.dumps(messages), f"seed {case.seed}"
    assert request.options == lm_kwargs, f"seed {case.seed}"
    reply = case.reply()
    lm = dspy.LM(case.model, api_key="k", cache=False)
    try:
        expected: Any = _values(
            case.adapter_of(dspy)._call_postprocess(rendered, case.signature(dspy), [reply], lm, {})
        )
    except Exception as exc:
        expected = ("error", type(exc).__name__ == "AdapterParseError")
    try:
        flow.send([reply])
    except StopIteration as done:
        got: Any = _values(done.value)
    except Exception as exc:
        got = ("error", type(exc).__name__ == "AdapterParseError")
    else:  # the fallback adapter asked for another call: DSPy would have made it too
        got = ("fallback", None)
        expected = ("fallback", None) if isinstance(expected, tuple) else expected
    assert got == expected, f"seed {case.seed}: {reply}"


def test_fc_corpus_is_large_and_varied() -> None:
    assert len(FC_CASES) >= 500
    assert {c.model for c in FC_CASES} == set(MODELS)
    assert sum(c.native and c.with_calls for c in FC_CASES) > 200
    assert sum(not c.native for c in FC_CASES) > 100


@pytest.mark.parametrize("chunk", range(4))
def test_function_calling_matches_dspy(chunk: int) -> None:
    """Half of the corpus in the default run (all of it with ``-m slow``)."""
    for case in FC_CASES[chunk::4][::2]:
        _check(case)


@pytest.mark.slow
@pytest.mark.parametrize("chunk", range(4))
def test_function_calling_matches_dspy_full_corpus(chunk: int) -> None:
    for case in FC_CASES[chunk::4]:
        _check(case)


# ---------------------------------------------------------------------------- on the wire


class Person(pydantic.BaseModel):
    name: str
    tags: list[str] = []
    age: int | None = None


WIRE_SIGNATURES: list[dict[str, Any]] = [
    {"q": (str, "in"), "a": (int, "out"), "p": (Person, "out"), "o": (str | None, "out")},
    {"q": (str, "in"), "label": (Literal["x", "y"], "out"), "people": (list[Person], "out")},
    {"q": (str, "in"), "meta": (dict[str, int], "out")},
]


def _sig(lib: Any, spec: dict[str, Any]) -> Any:
    return lib.Signature(
        {
            n: (t, lib.InputField() if io == "in" else lib.OutputField())
            for n, (t, io) in spec.items()
        }
    )


@pytest.mark.parametrize("model", ["openai/gpt-4o-mini", "openai/test", "openai/gpt-4"])
@pytest.mark.parametrize("spec", WIRE_SIGNATURES)
def test_response_format_on_the_wire(server: LMServer, model: str, spec: dict[str, Any]) -> None:
    server.clear()
    lm = dspy.LM(model, api_base=server.url, api_key="k", cache=False, num_retries=0)
    dspy.JSONAdapter()(lm, {}, _sig(dspy, spec), [], {"q": "hi"})
    sent = server.requests[-1].json
    native_lm = dspex.LM(model, api_base=server.url, api_key="k", cache=False, num_retries=0)
    request = next(dspex.JSONAdapter().flow({}, _sig(dspex, spec), [], {"q": "hi"}, native_lm))
    assert request.options.get("response_format") == sent.get("response_format")
    assert request.messages == sent["messages"]


# ---------------------------------------------------------------------------- history replay


def _history_case(lib: Any, with_ids: bool) -> tuple[Any, dict[str, Any]]:
    sig = lib.Signature(
        {
            "question": (str, lib.InputField()),
            "history": (lib.History, lib.InputField()),
            "answer": (str, lib.OutputField()),
            "calls": (lib.ToolCalls, lib.OutputField()),
        }
    )
    calls = [
        {"id": "call_1" if with_ids else None, "name": "search", "args": {"q": "a"}},
        {"id": "call_2" if with_ids else None, "name": "add", "args": {"x": 1}},
    ]
    turns = [
        {
            "question": "first?",
            "calls": {
                "tool_calls": calls,
                "tool_call_results": [
                    {"call_id": "call_1" if with_ids else None, "name": "search", "value": ["r"]},
                    {"call_id": "call_2" if with_ids else None, "name": "add", "value": 3},
                ],
            },
        },
        {"question": "second?", "answer": "done", "calls": {"tool_calls": []}},
    ]
    history = lib.History(messages=turns) if lib is dspy else lib.History(turns)
    return sig, {"question": "now?", "history": history}


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("with_ids", [True, False])
@pytest.mark.parametrize("adapter", ["ChatAdapter", "JSONAdapter", "XMLAdapter"])
def test_tool_history_is_replayed_like_dspy(adapter: str, native: bool, with_ids: bool) -> None:
    d_sig, d_inputs = _history_case(dspy, with_ids)
    n_sig, n_inputs = _history_case(dspex, with_ids)
    expected = getattr(dspy, adapter)(use_native_function_calling=native).format(
        d_sig, [], d_inputs
    )
    got = getattr(dspex, adapter)(use_native_function_calling=native).format(n_sig, [], n_inputs)
    assert json.dumps(got) == json.dumps(expected)
