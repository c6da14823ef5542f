"""dspy.Module behaviour on dspex.Module: one call path (callbacks, history, usage), batch,
save/load of whole programs, the forward() warning, asyncify/syncify."""

from __future__ import annotations

import asyncio
import io
import logging
from pathlib import Path
from typing import Any

import pytest

import dspex
from dspex.errors import CallError, StateError
from dspex.primitives.batch import BatchCancelled
from dspex.utils import BaseCallback, DummyLM
from dspex.utils.inspect_history import GLOBAL_HISTORY


class TwoStep(dspex.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = dspex.Predict("question -> answer")
        self.second = dspex.ChainOfThought("question, draft -> answer")

    def forward(self, question: str) -> Any:
        draft = self.first(question=question).answer
        return self.second(question=question, draft=draft)


class Recorder(BaseCallback):
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self.events.append(("module_start", type(instance).__name__))

    def on_module_end(self, call_id: str, outputs: Any, exception: Any = None) -> None:
        self.events.append(("module_end", exception))

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self.events.append(("lm_start", sorted(inputs)))

    def on_lm_end(self, call_id: str, outputs: Any, exception: Any = None) -> None:
        self.events.append(("lm_end", outputs))

    def on_adapter_format_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self.events.append(("format_start", type(instance).__name__))

    def on_adapter_parse_end(self, call_id: str, outputs: Any, exception: Any = None) -> None:
        self.events.append(("parse_end", outputs))


def answers(n: int) -> list[dict[str, str]]:
    return [{"answer": f"a{i}", "reasoning": f"r{i}"} for i in range(n)]


def test_callbacks_fire_for_modules_lms_and_adapters_sync_and_async() -> None:
    rec = Recorder()
    dspex.configure(lm=DummyLM(answers(4)), callbacks=[rec])
    TwoStep()(question="q")
    kinds = [e[0] for e in rec.events]
    assert kinds[0] == "module_start" and rec.events[0][1] == "TwoStep"
    assert kinds.count("lm_start") == 2 and kinds.count("format_start") == 2
    assert rec.events[-1] == ("module_end", None)
    assert ("lm_start", ["kwargs", "messages", "prompt"]) in rec.events
    sync_kinds = kinds
    rec.events.clear()
    asyncio.run(TwoStep().acall(question="q"))
    assert [e[0] for e in rec.events] == sync_kinds  # acall: the same events in the same order


def test_a_callback_naming_its_kinds_gets_only_those_and_others_keep_every_hook() -> None:
    from dspex.utils.callback_context import ACTIVE_CALL_ID

    class LMOnly(Recorder):
        _dspex_callback_kinds = frozenset({"lm"})

    seen: list[Any] = []

    class Probe(dspex.Module):
        def forward(self, question: str) -> Any:
            seen.append(ACTIVE_CALL_ID.get())
            return TwoStep()(question=question)

    lm_only = LMOnly()
    dspex.configure(lm=DummyLM(answers(4)), callbacks=[lm_only])
    Probe()(question="q")
    assert [e[0] for e in lm_only.events] == ["lm_start", "lm_end"] * 2
    assert seen == [None]  # no module hook ran, so no call id is set (as with no callbacks)
    everything = Recorder()
    dspex.configure(callbacks=[lm_only, everything])
    Probe()(question="q")
    assert [e[0] for e in lm_only.events[4:]] == ["lm_start", "lm_end"] * 2
    assert {e[0] for e in everything.events} >= {"module_start", "format_start", "lm_start"}
    assert seen[1] is not None


def test_callback_errors_are_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(BaseCallback):
        def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
            raise RuntimeError("boom")

    dspex.configure(lm=DummyLM(answers(1)), callbacks=[Broken()])
    with caplog.at_level(logging.WARNING):
        assert dspex.Predict("question -> answer")(question="q").answer == "a0"
    assert "boom" in caplog.text


def test_module_end_sees_the_exception() -> None:
    rec = Recorder()

    class Fails(dspex.Module):
        def forward(self) -> None:
            raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        Fails(callbacks=[rec])()
    assert isinstance(rec.events[-1][1], ValueError)


def test_usage_only_when_enabled_and_nested_trackers_roll_up() -> None:
    dspex.configure(lm=DummyLM(answers(10)))
    assert dspex.Predict("question -> answer")(question="q").get_lm_usage() is None
    with dspex.context(track_usage=True):
        usage = TwoStep()(question="q").get_lm_usage()
    assert usage == {"dummy": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}
    with dspex.track_usage() as outer:
        with dspex.track_usage() as inner:
            TwoStep()(question="q")
        assert len(inner.usage_data["dummy"]) == 2
    assert len(outer.usage_data["dummy"]) == 2  # rolled up on exit


def test_history_global_per_module_bounded_and_disabled() -> None:
    GLOBAL_HISTORY.clear()
    dspex.configure(lm=DummyLM(answers(20)), max_history_size=3)
    program = TwoStep()
    for _ in range(3):
        program(question="q")
    assert len(GLOBAL_HISTORY) == 6
    assert len(program.history) == 3 and len(program.first.history) == 3
    assert program.first.history[-1] in program.history
    out = io.StringIO()
    dspex.inspect_history(1, file=out)
    assert "Response:" in out.getvalue() and "[[ ## answer ## ]]" in out.getvalue()
    with dspex.context(disable_history=True):
        program(question="q")
    assert len(GLOBAL_HISTORY) == 6


def test_inspect_history_prints_what_dspy_prints() -> None:
    dspy = pytest.importorskip("dspy")
    from dspy.utils.inspect_history import pretty_print_history

    entries = [
        {
            "messages": [
                {"role": "system", "content": " sys "},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "look"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    ],
                },
            ],
            "outputs": ["  out  ", "other"],
            "timestamp": "t",
        }
    ]
    assert dspy is not None
    for colors in (False,):
        ours, theirs = io.StringIO(), io.StringIO()
        dspex.utils.pretty_print_history(entries, 1, file=ours)
        pretty_print_history(entries, 1, file=theirs)
        assert ours.getvalue() == theirs.getvalue(), colors


def test_batch_native_async_and_threads_keep_order_and_count_errors() -> None:
    dspex.configure(lm=DummyLM({f"q{i}": {"answer": f"a{i}"} for i in range(8)}))
    examples = [dspex.Example(question=f"q{i}").with_inputs("question") for i in range(8)]
    got = dspex.Predict("question -> answer").batch(examples, num_threads=3)
    assert [p.answer for p in got] == [f"a{i}" for i in range(8)]

    class Sync(dspex.Module):
        def __init__(self) -> None:
            super().__init__()
            self.p = dspex.Predict("question -> answer")

        def forward(self, question: str) -> Any:
            if question == "q3":
                raise ValueError("no q3")
            return self.p(question=question)

    out, failed, errors = Sync().batch(examples, num_threads=4, return_failed_examples=True)
    assert out[3] is None and [p.answer for p in out if p] == [f"a{i}" for i in range(8) if i != 3]
    assert failed == [examples[3]] and isinstance(errors[0], ValueError)
    with pytest.raises(BatchCancelled, match="cancelled due to errors"):
        Sync().batch(examples, num_threads=1, max_errors=1)
    with pytest.raises(CallError, match="num_threads"):
        Sync().batch(examples, num_threads=0)


def test_save_program_and_load_with_dspys_safety_flag(tmp_path: Path) -> None:
    dspex.configure(lm=DummyLM(answers(3)))
    program = TwoStep()
    program.first.demos = [dspex.Example(question="x", answer="y")]
    program.save(tmp_path / "prog", save_program=True)
    assert sorted(p.name for p in (tmp_path / "prog").iterdir()) == ["metadata.json", "program.pkl"]
    with pytest.raises(StateError, match="allow_pickle=True"):
        dspex.load(tmp_path / "prog")
    loaded = dspex.load(tmp_path / "prog", allow_pickle=True)
    assert type(loaded).__name__ == "TwoStep" and loaded.first.demos[0].answer == "y"
    assert loaded(question="q").answer == "a1"  # the second predictor answers
    with pytest.raises(StateError, match="without a suffix"):
        program.save(tmp_path / "prog.json", save_program=True)
    program.save(tmp_path / "state.pkl")
    with pytest.raises(StateError, match="allow_pickle"):
        TwoStep().load(tmp_path / "state.pkl")
    assert TwoStep().load(tmp_path / "state.pkl", allow_pickle=True).first.demos[0].answer == "y"


def test_state_keys_map_and_lms() -> None:
    program = TwoStep()
    assert list(program.dump_state()) == ["first", "second.predict"]
    program.map_named_predictors(lambda p: dspex.Predict(p.signature))
    assert [n for n, _ in program.named_predictors()] == ["first", "second.predict"]
    lm = DummyLM(answers(1))
    program.set_lm(lm)
    assert program.get_lm() is lm
    program.first.lm = DummyLM(answers(1))
    with pytest.raises(CallError, match="Multiple LMs"):
        program.get_lm()


def test_forward_called_directly_warns(caplog: pytest.LogCaptureFixture) -> None:
    dspex.configure(lm=DummyLM(answers(4)))
    program = TwoStep()
    with caplog.at_level(logging.WARNING):
        program(question="q")
        assert "directly is discouraged" not in caplog.text
        program.forward(question="q")
    assert "Calling module.forward(...) on TwoStep directly is discouraged" in caplog.text


def test_asyncify_syncify() -> None:
    dspex.configure(lm=DummyLM(answers(3)))

    class AsyncOnly(dspex.Module):
        def __init__(self) -> None:
            super().__init__()
            self.p = dspex.Predict("question -> answer")

        async def aforward(self, question: str) -> Any:
            return await self.p.acall(question=question)

    run = dspex.asyncify(TwoStep())
    assert asyncio.run(run(question="q")).answer == "a1"
    program = dspex.syncify(AsyncOnly())
    assert program(question="q").answer == "a2"
    wrapped = dspex.syncify(AsyncOnly(), in_place=False)
    assert isinstance(wrapped, dspex.Module)


def test_parallel_executor_as_dspy() -> None:
    from dspex.utils.parallelizer import BatchCancelled, ParallelExecutor

    def task(item: int) -> int:
        if item == 3:
            raise ValueError("three")
        return item * 2

    for threads in (1, 3):
        executor = ParallelExecutor(num_threads=threads, max_errors=2)
        assert executor.execute(task, [1, 2, 3, 4]) == [2, 4, None, 8]
        assert executor.failed_indices == [2] and str(executor.exceptions_map[2]) == "three"
        with pytest.raises(BatchCancelled, match="Execution cancelled"):
            ParallelExecutor(num_threads=threads, max_errors=1).execute(task, [1, 2, 3, 4])


def test_module_call_runs_the_forward_as_the_check_would(caplog: pytest.LogCaptureFixture) -> None:
    """``__call__`` runs a class's checked forward bare: an instance's own ``forward`` is still
    the one called, a child's forward called directly inside still warns, and the module's
    own forward called again from inside its forward warns (its children are checked afresh)."""

    class Child(dspex.Module):
        def forward(self, x: str) -> str:
            return f"child {x}"

    class Parent(dspex.Module):
        def __init__(self, again: bool = False) -> None:
            super().__init__()
            self.child = Child()
            self.again = again

        def forward(self, x: str) -> str:
            if self.again:
                self.again = False
                return self.forward(x=x)
            return self.child.forward(x=x)

    with caplog.at_level(logging.WARNING):
        assert Parent()(x="a") == "child a"
    assert "on Child directly is discouraged" in caplog.text
    assert "on Parent directly" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert Parent(again=True)(x="b") == "child b"
    assert "on Parent directly is discouraged" in caplog.text
    caplog.clear()
    patched = Parent()
    patched.forward = lambda x: f"instance {x}"  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING):
        assert patched(x="c") == "instance c"
    assert "directly is discouraged" not in caplog.text
