"""Native ``Evaluate``: DSPy's results and score on the same LM replies, errors, deadlines,
Ctrl-C, tables and files; the async form."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import threading
from typing import Any

import pytest

import dspex
from dspex.errors import EvaluationInterrupted, ExampleTimeout, ExecutionCancelled
from dspex.evaluate import Evaluate, EvaluationResult, answer_exact_match
from dspex.testing import LMServer


def _question(i: int) -> str:
    return f"What is item <{i:03d}> of the list?"


def _devset(n: int) -> list[Any]:
    return [
        dspex.Example(question=_question(i), answer=f"value {i}", qid=i).with_inputs("question")
        for i in range(n)
    ]


def _script(server: LMServer, n: int, wrong_every: int = 3) -> None:
    """Item i answers "value i", except every ``wrong_every``-th which answers wrongly."""
    for i in range(n):
        answer = "nope" if i % wrong_every == 0 else f"value {i}"
        server.add_rule(f"<{i:03d}>", {"answer": answer})


def picky_metric(example: Any, pred: Any, trace: Any = None) -> bool:
    """Exact match, but it fails on every 7th example (the metric itself raises)."""
    if example.qid % 7 == 0:
        raise ValueError(f"metric cannot score example {example.qid}")
    return answer_exact_match(example, pred)


def _rows(result: Any) -> list[tuple[dict[str, Any], dict[str, Any], Any]]:
    return [(dict(e.items()), dict(p.items()), s) for e, p, s in result.results]


def test_evaluate_50_examples_matches_dspy(server: LMServer) -> None:
    dspy = pytest.importorskip("dspy")
    server.clear()
    _script(server, 50)
    native_lm = dspex.LM(
        "openai/test", api_base=server.url, api_key="k", cache=False, num_retries=0
    )
    dspy_lm = dspy.LM("openai/test", api_base=server.url, api_key="k", cache=False, num_retries=0)
    n_dev, d_dev = (
        _devset(50),
        [dspy.Example(**e.toDict()).with_inputs("question") for e in _devset(50)],
    )

    with dspex.context(lm=native_lm):
        ours = Evaluate(devset=n_dev, metric=picky_metric, num_threads=8, max_errors=100)(
            dspex.Predict("question -> answer")
        )
    native_bodies = sorted(r.json["messages"][-1]["content"] for r in server.requests)
    server.requests.clear()
    with dspy.context(lm=dspy_lm):
        theirs = dspy.Evaluate(devset=d_dev, metric=picky_metric, num_threads=8, max_errors=100)(
            dspy.Predict("question -> answer")
        )
    dspy_bodies = sorted(r.json["messages"][-1]["content"] for r in server.requests)

    assert isinstance(ours, EvaluationResult)
    assert ours.score == theirs.score
    assert _rows(ours) == _rows(theirs)
    # the same prompts reached the LM (concurrent: compared as multisets)
    assert native_bodies == dspy_bodies and len(native_bodies) == 50
    # the failing metric scored failure_score with an empty prediction, on both sides
    failed = [i for i, (_, p, s) in enumerate(_rows(ours)) if not p]
    assert failed == [i for i in range(50) if i % 7 == 0]
    assert 0 < ours.score < 100


def test_score_and_failure_score(lm: Any, server: LMServer) -> None:
    _script(server, 6, wrong_every=2)  # 0, 2, 4 wrong
    ev = Evaluate(devset=_devset(6), metric=answer_exact_match, num_threads=3)
    result = ev(dspex.Predict("question -> answer"))
    assert result.score == 50.0
    assert repr(result) == "EvaluationResult(score=50.0, results=<list of 6 results>)"

    def boom(example: Any, pred: Any, trace: Any = None) -> float:
        raise RuntimeError("no")

    result = Evaluate(devset=_devset(3), metric=boom, failure_score=0.25)(
        dspex.Predict("question -> answer")
    )
    assert [s for *_, s in result.results] == [0.25, 0.25, 0.25]
    assert result.score == 25.0


def test_max_errors_cancels_with_typed_error(lm: Any, server: LMServer, caplog: Any) -> None:
    _script(server, 20)

    def boom(example: Any, pred: Any, trace: Any = None) -> float:
        raise RuntimeError(f"bad {example.qid}")

    ev = Evaluate(devset=_devset(20), metric=boom, num_threads=2, max_errors=3)
    with caplog.at_level(logging.ERROR), pytest.raises(ExecutionCancelled) as info:
        ev(dspex.Predict("question -> answer"))
    assert str(info.value) == "Execution cancelled due to errors or interruption."
    assert info.value.errors >= 3
    assert "Set `provide_traceback=True` for traceback." in caplog.text
    # cancelled: not every example reached the LM
    assert len(server.requests) < 20


def test_per_example_deadline(lm: Any, server: LMServer) -> None:
    _script(server, 4)
    from dspex.testing import Fault

    server.fault(Fault(delay=3.0, match="<002>"))
    ev = Evaluate(devset=_devset(4), metric=answer_exact_match, num_threads=4, timeout=0.5)
    result = ev(dspex.Predict("question -> answer"))
    scores = [s for *_, s in result.results]
    assert scores == [False, True, 0.0, False]  # item 2 timed out: failure_score


def test_per_example_deadline_error_is_typed() -> None:
    from dspex.modules.executor import Executor

    async def slow(x: int) -> int:
        await asyncio.sleep(10 if x == 1 else 0)
        return x

    ex: Executor[int, int] = Executor(num_threads=2, timeout=0.05, max_errors=5)
    out = ex.run(slow, [0, 1, 2])
    assert out.results == [0, None, 2]
    assert isinstance(out.errors[1], ExampleTimeout)


def test_single_thread_runs_metric_in_caller_thread(lm: Any, server: LMServer) -> None:
    _script(server, 3)
    threads: list[threading.Thread] = []

    def tracking(example: Any, pred: Any, trace: Any = None) -> bool:
        threads.append(threading.current_thread())
        return answer_exact_match(example, pred)

    Evaluate(devset=_devset(3), metric=tracking, num_threads=1)(dspex.Predict("question -> answer"))
    assert threads and all(t is threading.main_thread() for t in threads)


def test_plain_callable_program_and_async_metric(lm: Any, server: LMServer) -> None:
    _script(server, 4)
    predict = dspex.Predict("question -> answer")

    def program(question: str) -> Any:
        return predict(question=question)

    async def ametric(example: Any, pred: Any, trace: Any = None) -> bool:
        await asyncio.sleep(0)
        return answer_exact_match(example, pred)

    result = Evaluate(devset=_devset(4), metric=ametric, num_threads=2)(program)
    assert result.score == 50.0


def test_user_module_with_sync_forward(lm: Any, server: LMServer) -> None:
    _script(server, 4)

    class QA(dspex.Module):
        def __init__(self) -> None:
            super().__init__()
            self.predict = dspex.Predict("question -> answer")

        def forward(self, question: str) -> Any:
            return self.predict(question=question)

    result = Evaluate(devset=_devset(4), metric=answer_exact_match, num_threads=4)(QA())
    assert result.score == 50.0


async def test_acall_runs_on_the_callers_loop(lm: Any, server: LMServer) -> None:
    _script(server, 5)
    ev = Evaluate(devset=_devset(5), metric=answer_exact_match, num_threads=5)
    result = await ev.acall(dspex.Predict("question -> answer"))
    assert result.score == 60.0


def test_ctrl_c_stops_with_partial_results(lm: Any, server: LMServer) -> None:
    _script(server, 6)
    from dspex.testing import Fault

    server.fault(Fault(delay=30.0, match="<005>"))

    def interrupt_soon() -> None:
        # wait until the fast examples are done, then press Ctrl-C
        for _ in range(500):
            if len(server.requests) >= 6:
                break
            threading.Event().wait(0.01)
        threading.Event().wait(0.2)
        os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=interrupt_soon)
    thread.start()
    ev = Evaluate(devset=_devset(6), metric=answer_exact_match, num_threads=6)
    with pytest.raises(KeyboardInterrupt) as info:
        ev(dspex.Predict("question -> answer"))
    thread.join()
    err = info.value
    assert isinstance(err, EvaluationInterrupted)
    assert err.total == 6 and err.completed == 5
    assert err.partial is not None and len(err.partial.results) == 5
    assert err.partial.score == 60.0  # 3 of the 5 finished are right (0 and 3 are wrong)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_files_and_table(lm: Any, server: LMServer, tmp_path: Any, capsys: Any) -> None:
    _script(server, 3)
    csv_path, json_path = tmp_path / "r.csv", tmp_path / "r.json"
    Evaluate(
        devset=_devset(3),
        metric=answer_exact_match,
        display_table=2,
        display_progress=True,
        save_as_csv=str(csv_path),
        save_as_json=str(json_path),
    )(dspex.Predict("question -> answer"))
    out = capsys.readouterr().out
    assert "answer_exact_match" in out and "<001>" in out
    assert "1 more rows not displayed" in out
    assert "Average Metric" in out
    rows = json.loads(json_path.read_text())
    assert rows[1] == {
        "question": _question(1),
        "example_answer": "value 1",
        "qid": 1,
        "pred_answer": "value 1",
        "answer_exact_match": True,
    }
    assert (
        csv_path.read_text().splitlines()[0]
        == "question,example_answer,qid,pred_answer,answer_exact_match"
    )


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="return_outputs"):
        Evaluate(devset=_devset(1), metric=answer_exact_match, return_outputs=True)
    with pytest.raises(ValueError, match="empty devset"):
        Evaluate(devset=[], metric=answer_exact_match)(dspex.Predict("question -> answer"))
    with pytest.raises(ValueError, match="num_threads"):
        Evaluate(devset=_devset(1), metric=answer_exact_match, num_threads=-1)(
            dspex.Predict("question -> answer")
        )
    with pytest.raises(ValueError, match="timeout"):
        Evaluate(devset=_devset(1), metric=answer_exact_match, timeout=0)(
            dspex.Predict("question -> answer")
        )


def test_top_level_names() -> None:
    assert dspex.Evaluate is Evaluate
    assert dspex.evaluate.answer_exact_match is answer_exact_match


def test_callbacks_see_the_evaluation_and_its_program_calls(lm: Any, server: LMServer) -> None:
    from dspex.utils.callback import ACTIVE_CALL_ID, BaseCallback

    _script(server, 3)

    class Seen(BaseCallback):
        def __init__(self) -> None:
            self.events: list[tuple[str, Any]] = []
            self.parents: list[Any] = []
            self.evaluate_id: Any = None

        def on_evaluate_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
            self.evaluate_id = call_id
            self.events.append(("start", inputs["program"]))

        def on_evaluate_end(self, call_id: str, outputs: Any, exception: Any = None) -> None:
            self.events.append(("end", outputs.score))

        def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
            self.parents.append(ACTIVE_CALL_ID.get())

    seen = Seen()
    program = dspex.Predict("question -> answer")
    dspex.configure(callbacks=[seen])
    result = Evaluate(devset=_devset(3), metric=answer_exact_match, num_threads=2)(program)
    assert seen.events == [("start", program), ("end", result.score)]
    # module callbacks (fired by Module calls where the runtime wires them) are its children
    assert all(parent == seen.evaluate_id for parent in seen.parents)


def test_an_lm_with_a_customized_sync_call_is_called_the_sync_way() -> None:
    from dspex.testing.dummy import DummyLM

    threads: list[str] = []

    class CountingLM(DummyLM):
        def __call__(self, *args: Any, **kwargs: Any) -> list[str]:
            threads.append(threading.current_thread().name)
            return super().__call__(*args, **kwargs)

    dspex.configure(lm=CountingLM([{"answer": "value 1"}] * 4))
    result = Evaluate(devset=_devset(4), metric=answer_exact_match, num_threads=2)(
        dspex.Predict("question -> answer")
    )
    assert len(threads) == 4  # the override ran for every example (DSPy calls programs sync)
    assert result.score == 25.0
