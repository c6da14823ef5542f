"""The grounded proposer: the same program text, dataset summary requests and proposals as
DSPy 3.4.1 on one LMServer, and its fallbacks when a part of the grounding fails."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import dspex
from dspex.errors import ConfigurationError
from dspex.propose import GroundedProposer
from dspex.propose.dataset_summary_generator import create_dataset_summary
from dspex.propose.utils import (
    create_instruction_set_history_string,
    create_predictor_level_history_string,
    get_dspy_source_code,
    parse_list_of_instructions,
    strip_prefix,
)
from dspex.testing import LMServer, RecordedRequest
from dspex.testing.answers import read_prompt, render_reply
from tests.teleprompt import _oracle


def mixed(lib: Any) -> Any:
    """Class-defined and string signatures, typed fields, a list of predictors."""

    class Described(lib.Signature):  # type: ignore[misc, name-defined]
        """Answer with one word."""

        question: str = lib.InputField(desc="a question")
        answer: list[str] = lib.OutputField(desc="the words")

    class Mixed(lib.Module):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.first = lib.ChainOfThought(Described)
            self.plain = lib.Predict(Described)
            self.steps = [lib.Predict("question -> draft"), lib.Predict("draft -> answer")]

        def forward(self, question: str) -> Any:
            return self.first(question=question)

    return Mixed()


# ---------------------------------------------------------------- pure helpers
def test_strip_prefix_and_instruction_lists() -> None:
    assert strip_prefix('Proposed Instruction: "Be brief."') == "Be brief."
    assert strip_prefix("** New instruction: Think.") == "Think."
    assert strip_prefix("No label here") == "No label here"
    assert parse_list_of_instructions('["a", "b"]') == ["a", "b"]
    assert parse_list_of_instructions('1. "a" 2. "b"') == ["a", "b"]


def test_history_strings_from_saved_trials(tmp_path: Path) -> None:
    program = _oracle.two_step(dspex)
    logs: dict[int, dict[str, Any]] = {}
    for trial, (first, score) in enumerate([("A", 10.0), ("B", 30.0), ("A", 50.0)]):
        candidate = program.deepcopy()
        candidate.draft.signature = candidate.draft.signature.with_instructions(first)
        path = tmp_path / f"p{trial}.json"
        candidate.save(path)
        logs[trial] = {"program_path": str(path), "score": score}
    logs[9] = {"score": 99.0}  # no program saved: ignored
    assert create_predictor_level_history_string(program, 0, logs, 5) == (
        "B | Score: 30.0\n\nA | Score: 30.0\n\n"
    )
    second = program.answer.predict.signature.instructions
    text = create_instruction_set_history_string(program, logs, 2)
    # distinct instruction sets (the first seen of each), best two, worst first
    assert text == f'["A", "{second}"] | Score: 10.0\n\n["B", "{second}"] | Score: 30.0\n\n'


def test_source_code_needs_the_class_source() -> None:
    namespace: dict[str, Any] = {"dspex": dspex}
    exec(  # a class with no source file behind it
        "class Hidden(dspex.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.p = dspex.Predict('a -> b')\n",
        namespace,
    )
    with pytest.raises(TypeError):  # the proposer then runs without program awareness
        get_dspy_source_code(namespace["Hidden"]())


# ---------------------------------------------------------------- against DSPy
dspy_marks = [pytest.mark.dspy]


def _digest(request: RecordedRequest) -> int:
    return int(hashlib.sha256(json.dumps(request.messages).encode()).hexdigest()[:8], 16)


def reply(request: RecordedRequest) -> str:
    spec = read_prompt(str(request.messages[0]["content"]), request.last_user_message)
    assert spec is not None
    d = _digest(request)
    if "observations" in spec.fields and "prior_observations" in request.last_user_message:
        # every other batch says it has nothing to add
        text = "COMPLETE, nothing new" if d % 2 else f"more {d % 50}. "
        return render_reply(spec, {"observations": text})
    return render_reply(spec, {name: f"Answer: {name} {d % 997}" for name in spec.fields})


@pytest.fixture(scope="module")
def server() -> Iterator[LMServer]:
    with LMServer() as srv:
        srv.add_rule(None, reply)
        yield srv


def _lm(lib: Any, server: LMServer) -> Any:
    return lib.LM("openai/test", api_base=server.url, api_key="k", cache=False, num_retries=0)


def _bodies(server: LMServer) -> list[str]:
    return [json.dumps(r.json, sort_keys=True) for r in server.requests]


@pytest.mark.dspy
def test_strip_prefix_is_dspys() -> None:
    pytest.importorskip("dspy")
    from dspy.propose.utils import strip_prefix as theirs

    for text in ['A: "b"', "**New instruction:** Think.", "one two three four five six: x", '"q"']:
        assert strip_prefix(text) == theirs(text)


@pytest.mark.dspy
def test_program_source_is_dspys() -> None:
    dspy = pytest.importorskip("dspy")
    from dspy.propose.utils import get_dspy_source_code as theirs

    assert get_dspy_source_code(_oracle.two_step(dspex)) == theirs(_oracle.two_step(dspy))
    assert get_dspy_source_code(_oracle.repeated(dspex)) == theirs(_oracle.repeated(dspy))
    ours = get_dspy_source_code(mixed(dspex))
    assert ours == theirs(mixed(dspy))
    assert "class Described(lib.Signature)" in ours and "class Mixed(lib.Module)" in ours


@pytest.mark.dspy
def test_dataset_summary_same_requests(server: LMServer) -> None:
    dspy = pytest.importorskip("dspy")
    from dspy.propose.dataset_summary_generator import create_dataset_summary as theirs_fn

    numbers = list(range(1, 36))
    server.clear()
    server.add_rule(None, reply)
    theirs = theirs_fn(_oracle.trainset(dspy, numbers), 4, _lm(dspy, server))
    dspy_requests = _bodies(server)
    server.clear()
    server.add_rule(None, reply)
    ours = create_dataset_summary(_oracle.trainset(dspex, numbers), 4, _lm(dspex, server))
    assert _bodies(server) == dspy_requests
    assert ours == theirs and ours.startswith("summary ")
    assert len(dspy_requests) == 10  # first batch, 8 more (the 10-call cap), the summary


def _demo_sets(lib: Any) -> list[list[list[Any]]]:
    data = _oracle.trainset(lib, [2, 3, 4, 5])
    augmented = [
        lib.Example(augmented=True, question=x.question, hint="h", draft=f"d{i}")
        for i, x in enumerate(data)
    ]
    return [[[], augmented[:2], augmented[2:]], [[], data[:1], data[1:3]]]


def _propose(lib: Any, server: LMServer, **kwargs: Any) -> dict[int, list[str]]:
    from_lib = lib.propose.GroundedProposer if lib is dspex else _dspy_proposer()
    lm = _lm(lib, server)
    program = _oracle.two_step(lib)
    data = _oracle.trainset(lib, [2, 3, 4, 5, 6])
    with lib.context(lm=lm):
        proposer = from_lib(
            prompt_model=lm, program=program, trainset=data, rng=random.Random(7), **kwargs
        )
        return dict(
            proposer.propose_instructions_for_program(
                trainset=data,
                program=program,
                demo_candidates=_demo_sets(lib),
                trial_logs={},
                N=3,
            )
        )


def _dspy_proposer() -> Any:
    from dspy.propose.grounded_proposer import GroundedProposer as Theirs

    return Theirs


@pytest.mark.dspy
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"program_aware": False, "use_dataset_summary": False, "set_tip_randomly": False},
        {"init_temperature": 0.7, "set_history_randomly": False, "use_task_demos": False},
    ],
)
def test_proposals_same_requests_and_instructions(server: LMServer, kwargs: dict[str, Any]) -> None:
    dspy = pytest.importorskip("dspy")
    server.clear()
    server.add_rule(None, reply)
    theirs = _propose(dspy, server, **kwargs)
    dspy_requests = _bodies(server)
    server.clear()
    server.add_rule(None, reply)
    ours = _propose(dspex, server, **kwargs)
    assert _bodies(server) == dspy_requests
    assert ours == theirs
    assert [len(v) for v in ours.values()] == [3, 3]
    assert len(set(ours[0])) == 3  # different prompts, different proposals


@pytest.mark.dspy
def test_concurrent_proposals_are_the_same(server: LMServer) -> None:
    server.clear()
    server.add_rule(None, reply)
    one = _propose(dspex, server)
    in_order = _bodies(server)
    server.clear()
    server.add_rule(None, reply)
    many = _propose(dspex, server, num_threads=4)
    assert many == one
    assert sorted(_bodies(server)) == sorted(in_order)


# ---------------------------------------------------------------- fallbacks and errors
def test_grounding_failures_fall_back(server: LMServer) -> None:
    """A failed data summary or program description turns that grounding off, as in DSPy."""
    server.clear()
    server.add_rule(None, {"proposed_instruction": "Be exact."})  # other fields are missing
    lm = _lm(dspex, server)
    program = dspex.Predict("question -> answer")
    proposer = GroundedProposer(prompt_model=lm, program=program, trainset=[], rng=random.Random(0))
    assert proposer.use_dataset_summary is False and proposer.data_summary is None
    assert proposer.program_aware is True
    result = proposer.propose_instructions_for_program(
        trainset=[], program=program, demo_candidates=None, trial_logs={}, N=2
    )
    assert result == {0: ["Be exact.", "Be exact."]}
    assert proposer.use_task_demos is False


def test_needs_a_prompt_model() -> None:
    program = dspex.Predict("question -> answer")
    with dspex.context(lm=None):
        proposer = GroundedProposer(
            prompt_model=None, program=program, trainset=[], use_dataset_summary=False
        )
        with pytest.raises(ConfigurationError, match="prompt_model"):
            proposer.propose_instruction_for_predictor(
                program=program,
                predictor=None,
                pred_i=0,
                demo_candidates=None,
                demo_set_i=0,
                trial_logs={},
            )
