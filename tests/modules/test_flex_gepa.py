"""GEPA's Flex helpers (``dspex.teleprompt.gepa.flex_utils``) against DSPy 3.4.1's
``gepa_flex_utils``, on one ``LMServer``: the code proposer's requests byte for byte and its
result, trace-aware scoring (scores, objective scores, the trace a metric sees), the reflective
records, and the component plumbing (paths, task context, rebinding)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from tests.teleprompt import _oracle
from tests.teleprompt._oracle import trainset

import dspex
from dspex.errors import LMError
from dspex.modules.flex import Flex
from dspex.primitives.python_interpreter import PythonInterpreter
from dspex.teleprompt.gepa import flex_utils
from dspex.teleprompt.gepa import gepa_flex_utils as path_alias
from dspex.testing import Fault, LMServer, RecordedRequest
from dspex.testing.answers import answer_messages, read_prompt, render_reply

dspy = pytest.importorskip("dspy")
pytest.importorskip("gepa")
pytestmark = [
    pytest.mark.dspy,
    pytest.mark.filterwarnings("ignore:Passing OpenAI-style message:DeprecationWarning"),
]

from dspy.teleprompt.gepa import gepa_flex_utils as theirs_utils  # noqa: E402

MODEL = "openai/gpt-4o-mini"

REVISED = """
class QAModule(dspy.Module):
    def __init__(self):
        super().__init__()
        self.answer = dspy.Predict(dspy.Signature("question -> answer", "Answer in one word."))

    def forward(self, **inputs):
        out = self.answer(question=inputs["question"].strip())
        return dspy.Prediction(answer=out.answer.lower())
""".strip()


def lookup(query: str) -> str:
    """Look a query up."""
    return query


def program(lib: Any) -> Any:
    cls = Flex if lib is dspex else dspy.Flex

    class Program(lib.Module):
        def __init__(self) -> None:
            super().__init__()
            self.first = lib.Predict("question -> draft")
            self.flex = cls("question -> answer", interpreter_factory=PythonInterpreter)

        def forward(self, question: str) -> Any:
            draft = self.first(question=question).draft
            return self.flex(question=draft)

    return Program()


def lm(lib: Any, server: LMServer) -> Any:
    return lib.LM(MODEL, api_base=server.url, api_key="k", cache=False, num_retries=0)


def test_path_alias_is_the_same_helpers() -> None:
    assert path_alias.evaluate_with_trace is flex_utils.evaluate_with_trace
    assert path_alias.bootstrap_trace_module is flex_utils.bootstrap_trace_module


def test_components_and_task_context_match_dspy() -> None:
    ours, theirs = program(dspex), program(dspy)
    assert list(flex_utils.enumerate_flex_submodules(ours)) == ["flex"]
    assert list(theirs_utils.enumerate_flex_submodules(theirs)) == ["flex"]
    assert flex_utils.flex_task_context(ours) == theirs_utils.flex_task_context(theirs)
    tooled = Flex("question -> answer", tools=[lookup])
    assert flex_utils.flex_task_context(tooled)[1]["self"].startswith(
        "Available tools (in scope by name):\n  - lookup: Look a query up."
    )
    flex_utils.rebind_flex_code(ours, {"flex": REVISED, "first": "ignored"})
    assert ours.flex.module_src == REVISED
    with pytest.raises(SyntaxError):
        flex_utils.rebind_flex_code(ours, {"flex": "class (:"})


def _propose(lib: Any, server: LMServer, reply: Any) -> tuple[list[bytes], Any]:
    utils = flex_utils if lib is dspex else theirs_utils
    student = program(lib)
    server.clear()
    server.reply(reply)
    candidate = {"flex": student.flex.module_src}
    records = [
        {"Inputs": {"question": "Q?"}, "Generated Outputs": {"answer": "A"}, "Feedback": "Wrong."},
        {"Inputs": {"question": "R?"}, "Generated Outputs": "FailedPrediction: x", "Feedback": ""},
    ]
    descriptions, blurbs = utils.flex_task_context(student)
    try:
        result: Any = utils.propose_code(
            ["flex"], candidate, {"flex": records}, descriptions, blurbs, lm(lib, server)
        )
    except Exception as exc:
        result = exc
    return [r.body for r in server.requests], result


@pytest.mark.parametrize(
    "reply",
    [{"revised_source": f"```python\n{REVISED}\n```"}, "no fields at all"],
    ids=["revised", "unparseable-keeps-original"],
)
def test_propose_code_matches_dspy(server: LMServer, reply: Any) -> None:
    ours = _propose(dspex, server, reply)
    theirs = _propose(dspy, server, reply)
    assert ours[0] == theirs[0] and len(ours[0]) >= 1
    assert ours[1] == theirs[1]
    if isinstance(reply, dict):
        assert ours[1] == {"flex": REVISED}


def test_propose_code_lets_lm_errors_through(server: LMServer) -> None:
    server.clear()
    server.fault(Fault(status=401, times=-1))
    student = program(dspex)
    descriptions, blurbs = flex_utils.flex_task_context(student)
    with pytest.raises(LMError):
        flex_utils.propose_code(
            ["flex"], {"flex": student.flex.module_src}, {}, descriptions, blurbs, lm(dspex, server)
        )


def _evaluate(lib: Any, server: LMServer) -> tuple[list[bytes], Any, list[Any]]:
    utils = flex_utils if lib is dspex else theirs_utils
    seen: list[Any] = []

    def metric(example: Any, pred: Any, trace: Any = None, program_trace: Any = None) -> Any:
        seen.append((trace, len(program_trace or [])))
        if example.question == "boom":
            raise RuntimeError("metric broke")
        good = pred.answer == example.answer
        return lib.Prediction(
            score=float(good),
            feedback="ok" if good else "wrong",
            objective_scores={"right": float(good), "calls": -len(program_trace or [])},
        )

    student = program(lib)
    student.flex._bind_code(REVISED)
    batch = [
        lib.Example(question="one", answer="yes").with_inputs("question"),
        lib.Example(question="two", answer="yes").with_inputs("question"),
        lib.Example(question="boom", answer="yes").with_inputs("question"),
    ]
    server.clear()
    for question, answer in (("one", "YES"), ("two", "No"), ("boom", "yes")):
        server.add_rule(f"[[ ## question ## ]]\n{question}\n", {"draft": f"{question}?"})
        server.add_rule(f"[[ ## question ## ]]\n{question}?\n", {"answer": answer})
    with lib.context(lm=lm(lib, server)):
        result = utils.evaluate_with_trace(
            student,
            batch,
            metric_fn=metric,
            num_threads=1,
            failure_score=0.0,
            callback_metadata={},
            capture_traces=True,
        )
    return sorted(r.body for r in server.requests), result, seen


def test_evaluate_with_trace_matches_dspy(server: LMServer) -> None:
    ours_bodies, ours, ours_seen = _evaluate(dspex, server)
    theirs_bodies, theirs, theirs_seen = _evaluate(dspy, server)
    assert ours_bodies == theirs_bodies and len(ours_bodies) == 6
    assert ours.scores == theirs.scores == [1.0, 0.0, 0.0]
    assert ours.objective_scores == theirs.objective_scores
    # the trace holds the sibling's call and the Flex's bridged predictor call (run host-side)
    assert ours.objective_scores[0] == {"right": 1.0, "calls": -2}
    assert sorted(ours_seen) == sorted(theirs_seen)  # trace=None, program_trace given
    assert [o.answer for o in ours.outputs] == [o.answer for o in theirs.outputs]
    assert flex_utils.code_reflective_records(ours) == theirs_utils.code_reflective_records(theirs)
    records = flex_utils.code_reflective_records(ours)
    assert records[1]["Feedback"] == "wrong"
    assert records[2]["Feedback"] == "This trajectory got a score of 0.0."


# ---------------------------------------------------------------------------- GEPA over a Flex

_WORDS = ["Be brief.", "Think of parity.", "Answer even or odd.", "Check the number twice."]


def _gepa_reply(request: RecordedRequest) -> str:
    """The task LM: the instruction-sensitive oracle. The reflection LM: for a code component a
    revised source that computes the parity in Python (so GEPA accepts it) after calling a
    predictor whose instructions are drawn from a hash of the request (the same request bytes
    give the same source); for an instruction component DSPy's proposal words."""
    system = str(request.messages[0]["content"])
    spec = read_prompt(system, request.last_user_message)
    if spec is not None and "revised_source" in spec.fields:
        digest = hashlib.sha256(json.dumps(request.messages).encode()).digest()
        words = " ".join(_WORDS[b % len(_WORDS)] for b in digest[:2])
        source = (
            "class AnswerModule(dspy.Module):\n"
            "    def __init__(self):\n"
            "        super().__init__()\n"
            f'        self.answer = dspy.Predict(dspy.Signature("question, draft -> answer", {words!r}))\n'
            "\n"
            "    def forward(self, **inputs):\n"
            "        import re\n"
            '        n = int(re.search(r"-?\\d+", inputs["question"]).group(0))\n'
            '        out = self.answer(question=inputs["question"], draft=inputs["draft"])\n'
            '        parity = "even" if n % 2 == 0 else "odd"\n'
            "        return dspy.Prediction(answer=parity if out.answer else out.answer)"
        )
        return render_reply(spec, {"revised_source": f"```python\n{source}\n```"})
    if spec is not None and "new_instruction" in spec.fields:
        return answer_messages(request.messages)
    return _oracle.instruction_sensitive(request)


def _flex_student(lib: Any) -> Any:
    cls = Flex if lib is dspex else dspy.Flex

    class DraftThenFlex(lib.Module):
        def __init__(self) -> None:
            super().__init__()
            self.draft = lib.Predict("question, hint -> draft")
            self.flex = cls("question, draft -> answer", interpreter_factory=PythonInterpreter)

        def forward(self, question: str) -> Any:
            draft = self.draft(question=question, hint="parity").draft
            return self.flex(question=question, draft=draft)

    return DraftThenFlex()


def _gepa(server: LMServer, lib: Any) -> tuple[Any, list[Any]]:
    server.clear()
    server.add_rule(None, _gepa_reply)
    task = lib.LM("openai/task", api_base=server.url, api_key="k", cache=False, num_retries=0)
    reflection = lib.LM("openai/reflect", api_base=server.url, api_key="k", cache=False, num_retries=0)  # fmt: skip

    def metric(gold: Any, pred: Any, trace: Any = None, pred_name: Any = None, pred_trace: Any = None) -> Any:  # fmt: skip
        right = gold.answer == pred.answer
        return lib.Prediction(score=float(right), feedback="Correct." if right else "Wrong.")

    optimizer = lib.GEPA(
        metric=metric, reflection_lm=reflection, track_stats=True, seed=3, num_threads=1,
        max_metric_calls=20,
    )  # fmt: skip
    with lib.context(lm=task):
        program = optimizer.compile(
            _flex_student(lib), trainset=trainset(lib, [2, 9, 4]), valset=trainset(lib, [3, 6])
        )  # fmt: skip
    requests = [(r.json["model"], r.json["messages"], r.json.get("temperature")) for r in server.requests]  # fmt: skip
    return program, requests


def test_gepa_rewrites_flex_code_like_dspy(server: LMServer) -> None:
    theirs, theirs_requests = _gepa(server, dspy)
    ours, ours_requests = _gepa(server, dspex)
    proposals = [r for r in ours_requests if "revised_source" in json.dumps(r[1])]
    assert proposals, "the code proposer must have been asked"
    assert ours_requests == theirs_requests
    assert ours.flex.module_src == theirs.flex.module_src
    assert ours.draft.signature.instructions == theirs.draft.signature.instructions
    mine, other = ours.detailed_results, theirs.detailed_results
    assert mine.to_dict()["candidates"] == other.to_dict()["candidates"]
    assert mine.val_aggregate_scores == other.val_aggregate_scores
    assert mine.best_idx == other.best_idx
    assert any("flex" in c and "AnswerModule" in c["flex"] for c in mine.to_dict()["candidates"])


def test_adapter_scores_an_unbindable_candidate_as_failures_and_uses_a_custom_code_proposer() -> None:  # fmt: skip
    from dspex.teleprompt.gepa.adapter import DspyAdapter

    asked: list[dict[str, Any]] = []

    def code_proposer(**kwargs: Any) -> dict[str, str]:
        asked.append(kwargs)
        return {key: REVISED for key in kwargs["components_to_update"]}

    student = program(dspex)
    adapter = DspyAdapter(student, lambda *a, **k: 1.0, {}, custom_code_proposer=code_proposer)
    batch = [dspex.Example(question="q").with_inputs("question")]
    result = adapter.evaluate(batch, {"flex": "class (:"}, capture_traces=True)
    assert result.scores == [0.0] and result.trajectories == []
    assert adapter.flex.seed == {"flex": student.flex.module_src}
    proposals = adapter.propose_new_texts({"flex": "old"}, {"flex": []}, ["flex"])
    assert proposals == {"flex": REVISED}
    assert asked[0]["task_descriptions"]["flex"].startswith("Signature: StringSignature")
    assert adapter.build_program(proposals).flex.module_src == REVISED
