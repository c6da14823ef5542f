"""Native GEPA: arguments and errors, the budget rule, trace capture, the adapter's reflective
dataset, the instruction proposers and the ``detailed_results`` shape (in process, DummyLM)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest

import dspex
from dspex.teleprompt.bootstrap_trace import FailedPrediction, bootstrap_trace_data
from dspex.teleprompt.gepa import GEPA, InstructionProposer
from dspex.teleprompt.gepa.adapter import DspyAdapter
from dspex.teleprompt.gepa.gepa import DspyGEPAResult, auto_budget
from dspex.teleprompt.gepa.instruction_proposal import (
    MultiModalInstructionProposer,
    compact_history,
    load_skill,
)
from dspex.testing import DummyLM

pytest.importorskip("gepa")


class TwoStep(dspex.Module):
    def __init__(self) -> None:
        super().__init__()
        self.classify = dspex.Predict("text -> category")
        self.respond = dspex.Predict("category, text -> reply")

    def forward(self, text: str) -> Any:
        category = self.classify(text=text).category
        return self.respond(category=category, text=text)


def feedback_metric(
    gold: Any, pred: Any, trace: Any = None, pred_name: Any = None, pred_trace: Any = None
) -> Any:
    right = gold.reply == pred.reply
    return dspex.Prediction(score=float(right), feedback=None if right else "Say it exactly.")


def float_metric(
    gold: Any, pred: Any, trace: Any = None, pred_name: Any = None, pred_trace: Any = None
) -> float:
    return float(gold.reply == pred.reply)


def data() -> list[Any]:
    return [
        dspex.Example(text=f"message {i}", reply=f"reply {i}").with_inputs("text") for i in range(4)
    ]


def task_reply(messages: list[dict[str, Any]], hits: dict[str, int] | None = None) -> Any:
    """Right when the instruction mentions 'exactly', else wrong for odd messages."""
    system, user = str(messages[0]["content"]), str(messages[-1]["content"])
    number = int(user.split("message ")[1].split()[0]) if "message " in user else 0
    if "`reply`" in system.split("Your output fields are:")[1].split("All interactions")[0]:
        good = "exactly" in system or number % 2 == 0
        if hits is not None:
            hits["exactly" if "exactly" in system else "seed"] += 1
        return {"reply": f"reply {number}" if good else "nope"}
    return {"category": "greeting"}


def task_lm(hits: dict[str, int]) -> DummyLM:
    return DummyLM(lambda messages: task_reply(messages, hits))


# ---------------------------------------------------------------------------- arguments


def test_metric_must_take_five_arguments() -> None:
    with pytest.raises(TypeError, match="five arguments"):
        GEPA(metric=lambda gold, pred: 1.0, reflection_lm=DummyLM(), max_metric_calls=1)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "budget",
    [{}, {"auto": "light", "max_metric_calls": 3}, {"max_full_evals": 1, "max_metric_calls": 3}],
)
def test_exactly_one_budget(budget: dict[str, Any]) -> None:
    with pytest.raises(AssertionError, match="Exactly one of"):
        GEPA(metric=float_metric, reflection_lm=DummyLM(), **budget)


def test_unknown_auto_and_missing_reflection_lm() -> None:
    with pytest.raises(ValueError, match="auto must be one of"):
        GEPA(metric=float_metric, reflection_lm=DummyLM(), auto="extreme")  # type: ignore[arg-type]
    with pytest.raises(AssertionError, match="reflection language model"):
        GEPA(metric=float_metric, max_metric_calls=3)
    with pytest.raises(AssertionError, match="track_stats must be True"):
        GEPA(
            metric=float_metric,
            reflection_lm=DummyLM(),
            max_metric_calls=3,
            track_best_outputs=True,
        )


def test_unsupported_gepa_kwargs() -> None:
    with pytest.raises(ValueError, match="max_reflection_cost"):
        GEPA(
            metric=float_metric,
            reflection_lm=DummyLM(),
            max_metric_calls=1,
            gepa_kwargs={"max_reflection_cost": 1.0},
        )
    with pytest.raises(ValueError, match="reflection_prompt_template"):
        GEPA(
            metric=float_metric,
            reflection_lm=DummyLM(),
            max_metric_calls=1,
            gepa_kwargs={"reflection_prompt_template": "<curr_param>"},
        )


def test_compile_rejects_empty_trainset_and_teacher() -> None:
    optimizer = GEPA(metric=float_metric, reflection_lm=DummyLM(), max_metric_calls=3)
    with pytest.raises(AssertionError, match="Trainset"):
        optimizer.compile(TwoStep(), trainset=[])
    with pytest.raises(AssertionError, match="Teacher"):
        optimizer.compile(TwoStep(), trainset=data(), teacher=TwoStep())


def test_missing_gepa_library_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "gepa", None)  # as if not installed
    optimizer = GEPA(metric=float_metric, reflection_lm=DummyLM(), max_metric_calls=3)
    with pytest.raises(dspex.errors.ConfigurationError, match=r"dspex\[optimizers\]"):
        optimizer.compile(TwoStep(), trainset=data())


def test_auto_budget_known_values_and_errors() -> None:
    # light, 2 predictors, 10 val examples: trials = max(4*2*log2(6), 9) = 20
    assert auto_budget(2, 6, 10) == 10 + 30 + 20 * 35 + ((21 // 5) + 1) * 10
    assert auto_budget(1, 6, 5) == 5 + 30 + 10 * 35 + ((11 // 5) + 1) * 5
    with pytest.raises(ValueError, match=">= 0"):
        auto_budget(1, 6, -1)
    with pytest.raises(ValueError, match="full_eval_steps"):
        auto_budget(1, 6, 5, full_eval_steps=0)


@pytest.mark.dspy
def test_auto_budget_matches_dspy() -> None:
    dspy = pytest.importorskip("dspy")
    theirs = dspy.GEPA(metric=float_metric, reflection_lm=dspy.LM("openai/x"), auto="light")
    ours = GEPA(metric=float_metric, reflection_lm=DummyLM(), auto="light")
    for preds in (1, 2, 5):
        for n in (6, 12, 18):
            for val in (0, 1, 7, 100):
                for steps in (1, 5, 40):
                    assert ours.auto_budget(preds, n, val, full_eval_steps=steps) == (
                        theirs.auto_budget(preds, n, val, full_eval_steps=steps)
                    )


def test_registry_and_public_names_are_native() -> None:
    rows = {row.kind: row for row in dspex.registry()}
    assert rows["gepa"].native == "dspex.teleprompt.gepa.gepa:GEPA"
    assert rows["gepa"].default == "native"
    built = dspex.GEPA(metric=float_metric, reflection_lm=DummyLM(), max_metric_calls=2)
    assert isinstance(built, GEPA)
    assert dspex.teleprompt.GEPA is GEPA


# ---------------------------------------------------------------------------- trace capture


def test_bootstrap_trace_data_captures_each_examples_trace() -> None:
    program = TwoStep()
    hits = {"exactly": 0, "seed": 0}
    with dspex.context(lm=task_lm(hits)):
        rows = bootstrap_trace_data(program, data(), metric=float_metric, num_threads=2)
    assert [row["example_ind"] for row in rows] == [0, 1, 2, 3]
    assert [row["score"] for row in rows] == [1.0, 0.0, 1.0, 0.0]
    for row in rows:
        predictors = [step[0] for step in row["trace"]]
        assert predictors == [program.classify, program.respond]
        assert row["trace"][1][1]["category"] == "greeting"


def test_bootstrap_trace_data_parse_failures_and_crashes() -> None:
    program = dspex.Predict("text -> reply")
    garbage = DummyLM(lambda messages: "no fields at all")
    examples = data()[:2]
    with dspex.context(lm=garbage):
        rows = bootstrap_trace_data(
            program, examples, metric=float_metric, capture_failed_parses=True, num_threads=1
        )
        assert len(rows) == 2
        failed = rows[0]["prediction"]
        assert isinstance(failed, FailedPrediction)
        assert failed.completion_text == "no fields at all"
        assert rows[0]["trace"][-1][0] is program and rows[0]["score"] == -1
        # Not captured: the example is dropped (or raises with raise_on_error).
        assert bootstrap_trace_data(program, examples, raise_on_error=False, num_threads=1) == []
        with pytest.raises(ValueError, match="left no trace"):
            bootstrap_trace_data(program, examples, num_threads=1)

    class Crashes(dspex.Module):
        def forward(self, text: str) -> Any:
            raise RuntimeError("boom")

    rows = bootstrap_trace_data(Crashes(), examples, capture_crashes=True, num_threads=1)
    assert [r["prediction"].completion_text for r in rows] == ["RuntimeError: boom"] * 2  # type: ignore[union-attr]
    assert bootstrap_trace_data(Crashes(), [], num_threads=1) == []


# ---------------------------------------------------------------------------- adapter


def _adapter(**kwargs: Any) -> DspyAdapter:
    optimizer = GEPA(metric=feedback_metric, reflection_lm=DummyLM(), max_metric_calls=10)
    student = TwoStep()
    feedback = {n: optimizer._feedback_fn(n, p) for n, p in student.named_predictors()}
    return DspyAdapter(student, feedback_metric, feedback, rng=random.Random(0), **kwargs)


def test_adapter_evaluates_and_builds_the_reflective_dataset() -> None:
    adapter = _adapter(num_threads=2)
    hits = {"exactly": 0, "seed": 0}
    candidate = {"classify": "Classify.", "respond": "Reply."}
    with dspex.context(lm=task_lm(hits)):
        plain = adapter.evaluate(data(), candidate)
        traced = adapter.evaluate(data(), candidate, capture_traces=True)
    assert plain.scores == traced.scores == [1.0, 0.0, 1.0, 0.0]
    assert plain.trajectories is None and len(traced.trajectories) == 4
    built = adapter.build_program(candidate)
    assert [p.signature.instructions for _, p in built.named_predictors()] == [
        "Classify.",
        "Reply.",
    ]
    assert adapter.student.respond.signature.instructions != "Reply."  # the student is untouched

    dataset = adapter.make_reflective_dataset(candidate, traced, ["respond"])
    first, second = dataset["respond"][:2]
    assert first["Inputs"] == {"category": "greeting", "text": "message 0"}
    assert first["Generated Outputs"] == {"reply": "reply 0"}
    assert first["Feedback"] == "This trajectory got a score of 1.0."  # None -> the score text
    assert second["Feedback"] == "Say it exactly."
    with pytest.raises(AssertionError, match="Predictor not found"):
        adapter.make_reflective_dataset(candidate, traced, ["nothing"])


def test_adapter_format_failures_become_feedback() -> None:
    adapter = DspyAdapter(
        dspex.Predict("text -> reply"), float_metric, {}, add_format_failure_as_feedback=True
    )
    with dspex.context(lm=DummyLM(lambda messages: "free text")):
        batch = adapter.evaluate(data()[:1], {}, capture_traces=True)
    assert batch.scores == [0.0]
    (item,) = adapter.make_reflective_dataset({}, batch, ["self"])["self"]
    assert "free text" in item["Generated Outputs"]
    assert item["Feedback"].startswith(
        "Your output failed to parse. Follow this structure:\nsystem: "
    )
    no_feedback = DspyAdapter(dspex.Predict("text -> reply"), float_metric, {})
    with pytest.raises(Exception, match="No valid predictions"):
        no_feedback.make_reflective_dataset({}, batch, ["self"])


def test_adapter_objective_scores_and_state() -> None:
    adapter = _adapter()
    batch = adapter._make_evaluation_batch(
        [None, None, None],
        [dspex.Prediction(score=0.5, objective_scores={"a": 1.0}), 0.25, None],
        None,
    )
    assert batch.scores == [0.5, 0.25, 0.0]
    assert batch.objective_scores == [{"a": 1.0}, {}, {}]
    state = adapter.get_adapter_state()
    first = adapter.rng.random()
    adapter.set_adapter_state(state)
    assert adapter.rng.random() == first


def test_batch_evaluate_shares_threads_and_keeps_context() -> None:
    adapter = _adapter(num_threads=5)
    seen: list[tuple[Any, int | None, bool]] = []

    def fake(
        batch: Any, candidate: Any, capture_traces: bool = False, num_threads: Any = None
    ) -> Any:
        seen.append((dspex.settings.current().lm, num_threads, capture_traces))
        return candidate

    adapter.evaluate = fake  # type: ignore[method-assign]
    lm = DummyLM()
    with dspex.context(lm=lm):
        out = adapter.batch_evaluate([({"c": "1"}, []), ({"c": "2"}, [])], capture_traces=False)
    assert out == [{"c": "1"}, {"c": "2"}]
    assert sorted(t for _, t, _ in seen) == [2, 3]
    assert all(s[0] is lm and s[2] is False for s in seen)


def test_batch_evaluate_runs_one_pair_in_the_callers_thread() -> None:
    """GEPA's default strategy scores one (candidate, minibatch) pair per call: it runs in the
    caller's thread (its event loop and connections), with all the threads."""
    import threading

    adapter = _adapter(num_threads=5)
    seen: list[tuple[Any, int | None]] = []

    def fake(
        batch: Any, candidate: Any, capture_traces: bool = False, num_threads: Any = None
    ) -> Any:
        seen.append((threading.current_thread(), num_threads))
        return candidate

    adapter.evaluate = fake  # type: ignore[method-assign]
    assert adapter.batch_evaluate([({"c": "1"}, [])]) == [{"c": "1"}]
    assert seen == [(threading.current_thread(), 5)]


def test_engine_state_round_trip() -> None:
    """What the gepa library's checkpoint leaves out comes back: the shared generator (once,
    however many parts hold it), the sampler's epoch and the merge schedule, whose "last
    iteration found a program" flag is set again at the first stop check (the engine clears
    it when its loop starts)."""
    from types import SimpleNamespace

    from gepa.core.data_loader import ensure_loader
    from gepa.proposer.merge import MergeProposer
    from gepa.strategies.batch_sampler import EpochShuffledBatchSampler
    from gepa.strategies.candidate_selector import ParetoCandidateSelector

    from dspex.teleprompt.gepa.engine_state import EngineState

    def engine() -> Any:
        rng = random.Random(0)
        merge = MergeProposer(
            logger=SimpleNamespace(log=lambda _x: None),
            valset=ensure_loader([1, 2, 3]),
            evaluator=lambda batch, program: ([], [], None),
            use_merge=True,
            max_merge_invocations=5,
            rng=rng,
        )
        proposer = SimpleNamespace(
            candidate_selector=ParetoCandidateSelector(rng=rng),
            batch_sampler=EpochShuffledBatchSampler(minibatch_size=3, rng=rng),
        )
        return SimpleNamespace(reflective_proposer=proposer, merge_proposer=merge)

    first = EngineState()
    first.engine = engine()
    sampler = first.engine.reflective_proposer.batch_sampler
    sampler.next_minibatch_ids(ensure_loader(list(range(10))), SimpleNamespace(i=0))
    merge = first.engine.merge_proposer
    merge.merges_due, merge.total_merges_tested, merge.last_iter_found_new_program = 1, 2, True
    merge.merges_performed[0].append((1, 2, 0))
    saved = first.capture()
    assert len(saved["rngs"]) == 1  # one generator shared by the three parts
    expected = [merge.rng.random() for _ in range(3)]

    second = EngineState()
    second.engine = engine()
    second.restore(saved)
    again = second.engine
    assert [again.merge_proposer.rng.random() for _ in range(3)] == expected
    assert again.reflective_proposer.batch_sampler.shuffled_ids == sampler.shuffled_ids
    assert again.reflective_proposer.batch_sampler.epoch == sampler.epoch == 0
    assert (again.merge_proposer.merges_due, again.merge_proposer.total_merges_tested) == (1, 2)
    assert again.merge_proposer.merges_performed == ([(1, 2, 0)], [])
    assert again.merge_proposer.last_iter_found_new_program is False  # until the loop starts
    again.merge_proposer.last_iter_found_new_program = False  # what the engine's run() does
    assert second(None) is False
    assert again.merge_proposer.last_iter_found_new_program is True
    assert second(None) is False  # only once
    again.merge_proposer.last_iter_found_new_program = False
    second(None)
    assert again.merge_proposer.last_iter_found_new_program is False
    # an adapter used outside the engine has no engine state to save
    assert EngineState().capture() == {}
    assert "engine_state" not in _adapter().get_adapter_state()


def test_stripped_lm_call() -> None:
    adapter = _adapter(reflection_lm=lambda prompt: ["text", {"text": "from dict"}])
    assert adapter.stripped_lm_call("x") == ["text", "from dict"]
    adapter.reflection_lm = lambda prompt: [{"reasoning": "r"}]
    with pytest.raises(KeyError, match="text"):
        adapter.stripped_lm_call("x")
    adapter.reflection_lm = lambda prompt: [3]
    with pytest.raises(TypeError, match="Unexpected output type"):
        adapter.stripped_lm_call("x")


# ---------------------------------------------------------------------------- compile


def test_compile_improves_the_program_with_reflection() -> None:
    hits = {"exactly": 0, "seed": 0}
    reflection = DummyLM([{"new_instruction": "Reply with `reply N` exactly."}] * 10)
    optimizer = GEPA(
        metric=feedback_metric,
        reflection_lm=reflection,
        max_metric_calls=30,
        track_stats=True,
        track_best_outputs=True,
        num_threads=1,
        reflection_minibatch_size=2,
    )
    with dspex.context(lm=task_lm(hits)):
        compiled = optimizer.compile(TwoStep(), trainset=data(), valset=data())
    assert "exactly" in compiled.respond.signature.instructions or (
        "exactly" in compiled.classify.signature.instructions
    )
    assert reflection.calls and hits["exactly"] > 0
    result = compiled.detailed_results
    assert isinstance(result, DspyGEPAResult)
    assert (
        result.val_aggregate_scores[0] == 0.5
        and result.val_aggregate_scores[result.best_idx] == 1.0
    )
    assert isinstance(result.best_candidate, TwoStep)
    assert result.highest_score_achieved_per_val_task == {0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0}
    as_dict = result.to_dict()
    assert as_dict["best_idx"] == result.best_idx
    assert all(isinstance(v, list) for v in as_dict["per_val_instance_best_candidates"].values())
    assert as_dict["candidates"][0] == {
        "classify": "Given the fields `text`, produce the fields `category`.",
        "respond": "Given the fields `category`, `text`, produce the fields `reply`.",
    }
    assert result.best_outputs_valset is not None and set(result.best_outputs_valset) == {
        0,
        1,
        2,
        3,
    }


def test_max_lm_calls_stops_with_the_best_so_far() -> None:
    from dspex.testing import LMServer
    from dspex.testing.answers import read_prompt, render_reply

    def reply(request: Any) -> str:
        system = str(request.messages[0]["content"])
        spec = read_prompt(system, request.last_user_message)
        assert spec is not None
        if "new_instruction" in spec.fields:
            return render_reply(spec, {"new_instruction": "Reply with `reply N` exactly."})
        return render_reply(spec, task_reply(request.messages))

    with LMServer() as server:
        server.add_rule(None, reply)
        lm = dspex.LM("openai/task", api_base=server.url, api_key="k", cache=False)
        reflection = dspex.LM("openai/reflect", api_base=server.url, api_key="k", cache=False)
        optimizer = GEPA(
            metric=feedback_metric,
            reflection_lm=reflection,
            max_metric_calls=400,
            num_threads=1,
            track_stats=True,
            max_lm_calls=30,
        )
        with dspex.context(lm=lm):
            compiled = optimizer.compile(TwoStep(), trainset=data(), valset=data())
        made = len(server.requests)
    assert optimizer.budget.total == made
    assert set(optimizer.budget.calls) == {"evaluate", "reflection"}
    # Stopped between iterations: at most one iteration past the limit, far below the budget.
    assert 30 <= made < 60
    assert compiled.detailed_results.total_metric_calls < 400
    with pytest.raises(dspex.errors.OptimizerError, match="max_lm_calls"):
        GEPA(metric=float_metric, reflection_lm=DummyLM(), max_metric_calls=3, max_lm_calls=0)


def test_acompile_and_custom_proposer_without_reflection_lm() -> None:
    calls: list[list[str]] = []

    def proposer(candidate: Any, reflective_dataset: Any, components_to_update: Any) -> Any:
        calls.append(list(components_to_update))
        return {name: "Answer exactly." for name in components_to_update}

    hits = {"exactly": 0, "seed": 0}
    optimizer = GEPA(metric=feedback_metric, instruction_proposer=proposer, max_metric_calls=20)

    async def main() -> Any:
        with dspex.context(lm=task_lm(hits)):
            return await optimizer.acompile(TwoStep(), trainset=data())

    compiled = asyncio.run(main())
    assert calls and "exactly" in str(
        [p.signature.instructions for _, p in compiled.named_predictors()]
    )
    assert not hasattr(compiled, "detailed_results")


# ---------------------------------------------------------------------------- proposers


def test_instruction_proposer_prompt_and_length_limit() -> None:
    lm = DummyLM([{"new_instruction": "x" * 50}, {"shortened_instruction": "short enough"}])
    proposer = InstructionProposer(max_chars=20, additional_instructions="  Be brief. ")
    examples = {"p": [{"Inputs": {"a": 1}, "Generated Outputs": {"b": 2}, "Feedback": "ok"}]}
    with dspex.context(lm=lm):
        assert proposer({"p": "Old.", "q": "Other."}, examples, ["p", "q"]) == {"p": "short enough"}
    first = str(lm.calls[0]["messages"][0]["content"])
    assert first.index("`additional_instructions`") < first.index("`length_limit`")
    assert first.index("`length_limit`") < first.index("`current_instruction`")
    assert "The new instruction must be at most 20 characters." in str(lm.calls[0]["messages"])
    from pydantic import ValidationError

    with (
        dspex.context(
            lm=DummyLM([{"new_instruction": "x" * 50}, {"shortened_instruction": "y" * 30}])
        ),
        pytest.raises(ValidationError),
    ):
        proposer({"p": "Old."}, examples, ["p"])
    blank = DummyLM([{"new_instruction": "   "}])
    with dspex.context(lm=blank), pytest.raises(ValueError, match="empty instruction"):
        InstructionProposer()({"p": "Old."}, examples, ["p"])


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"max_chars": 0}, ValueError),
        ({"max_chars": True}, ValueError),
        ({"truncate_history_outputs": "yes"}, TypeError),
        ({"adapter": "json"}, TypeError),
        ({"additional_instructions": 3}, TypeError),
        ({"skills": "./no/such/skill"}, FileNotFoundError),
        ({"skills": 7}, TypeError),
        ({"skills": "   "}, ValueError),
    ],
)
def test_instruction_proposer_bad_arguments(kwargs: dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        InstructionProposer(**kwargs)


def test_skills_from_files_directories_and_text(tmp_path: Path) -> None:
    (tmp_path / "skill").mkdir()
    (tmp_path / "skill" / "SKILL.md").write_text(
        "---\nname: prompting\ndescription: How to prompt\n---\nUse examples.\n"
    )
    (tmp_path / "notes.md").write_text("# Notes\nKeep it short.")
    assert load_skill(tmp_path / "skill").name == "prompting"
    assert load_skill(str(tmp_path / "notes.md")).name == "notes"
    inline = load_skill("Always cite sources.\nNever guess.")
    assert inline.name == "Always cite sources." and inline.content.endswith("Never guess.")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"has no SKILL\.md"):
        load_skill(tmp_path / "empty")
    (tmp_path / "bad.md").write_text("---\nname: [1]\n---\nx")
    with pytest.raises(ValueError, match="must be a string"):
        load_skill(tmp_path / "bad.md")
    lm = DummyLM([{"new_instruction": "New."}])
    proposer = InstructionProposer(skills=[tmp_path / "skill", "Inline rule one.\nTwo."])
    examples = {"p": [{"Inputs": {}, "Generated Outputs": {}, "Feedback": "f"}]}
    with dspex.context(lm=lm):
        assert proposer({"p": "Old."}, examples, ["p"]) == {"p": "New."}
    sent = str(lm.calls[0]["messages"][-1]["content"])
    assert "<skill name='prompting' description='How to prompt'>\nUse examples.\n</skill>" in sent


def test_compact_history_cuts_long_tool_results() -> None:
    from dspex.adapters.types import History
    from dspex.adapters.types.tool_calls import ToolCalls

    calls = ToolCalls.from_dict_list([{"name": "search", "args": {"q": "x"}}])
    results = pytest.importorskip("dspex.adapters.types.tool_calls").ToolCallResults
    attached = calls.model_copy(
        update={"tool_call_results": results.from_tool_calls_and_values(calls, ["y" * 600])}
    )
    history = History([{"question": "q", "calls": attached}])
    short = compact_history(history)
    value = short.messages[0]["calls"].tool_call_results.tool_call_results[0].value
    assert value == "y" * 500 + " [100 of 600 characters cut]"
    assert history.messages[0]["calls"].tool_call_results.tool_call_results[0].value == "y" * 600


def test_multimodal_proposer_sends_images_as_content() -> None:
    image = dspex.Image("https://example.com/a.png")
    lm = DummyLM([{"improved_instruction": "Look closely."}])
    dataset = {
        "p": [
            {"Inputs": {"photo": image}, "Generated Outputs": {"label": "cat"}, "Feedback": "wrong"}
        ]
    }
    with dspex.context(lm=lm):
        assert MultiModalInstructionProposer()({"p": "Label."}, dataset, ["p"]) == {
            "p": "Look closely."
        }
    sent = str(lm.calls[0]["messages"])
    assert "image_url" in sent and "[IMAGE-1 - see visual content]" in sent
    assert "**Common Issues Found (1 examples):**" in sent
