"""Run accounting, budgets and run directories in process: the per-phase summary adds up to
what the LM server was paid, ``max_cost`` stops with the best program so far, and a run
directory of another run is refused with a typed error."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import dspex
from dspex.errors import OptimizerError, RunDirError, RunDirMismatch, RunNotFound
from dspex.teleprompt import (
    COPRO,
    GEPA,
    SIMBA,
    BootstrapFewShot,
    BootstrapFewShotWithRandomSearch,
    MIPROv2,
)
from dspex.teleprompt import budget as budget_mod
from dspex.teleprompt.budget import CallBudget, RunSummary, price_of, register_price
from dspex.teleprompt.run import FORMAT_VERSION, Run, RunDir
from dspex.testing import LMServer
from tests.teleprompt import _oracle
from tests.teleprompt._oracle import exact, serve_oracle, trainset

NUMBERS = [2, 9, 4, 7, 5, 15, 6, 8, 10, 11]
PRICED = "openai/gpt-4o-mini"  # priced by litellm's table; served by the LMServer


@pytest.fixture(scope="module")
def server() -> Iterator[LMServer]:
    with LMServer() as srv:
        serve_oracle(srv)
        yield srv


def _lm(server: LMServer, model: str = "openai/test", cache: bool = False) -> Any:
    return dspex.LM(model, api_base=server.url, api_key="k", cache=cache, num_retries=0)


def _compile(server: LMServer, optimizer: Any, model: str = "openai/test", **kwargs: Any) -> Any:
    with dspex.context(lm=_lm(server, model)):
        return optimizer.compile(
            _oracle.two_step(dspex), trainset=trainset(dspex, NUMBERS), **kwargs
        )


def _state(program: Any) -> str:
    return json.dumps(program.dump_state(), default=repr)


# ---------------------------------------------------------------------- summaries
def test_bootstrap_summary_adds_up_to_the_server_requests(server: LMServer) -> None:
    before = len(server.requests)
    compiled = _compile(
        server, BootstrapFewShot(metric=exact, max_bootstrapped_demos=10, num_threads=3)
    )
    paid = len(server.requests) - before
    summary = compiled.run_summary
    assert isinstance(summary, RunSummary)
    assert list(summary.phases) == ["bootstrap"]
    total = summary.total
    assert total.lm_calls == total.paid_calls == paid == 2 * len(NUMBERS)
    assert total.cache_hits == 0 and total.errors == 0
    assert total.prompt_tokens > 0 and total.completion_tokens > 0
    assert total.cost == 0.0 and total.unpriced_calls == paid  # "openai/test" has no price
    text = str(summary)
    assert "bootstrap" in text and "total" in text and "no known price" in text


def test_cache_hits_are_counted_and_not_paid(server: LMServer, tmp_path: Path) -> None:
    with dspex.context(lm=_lm(server, PRICED, cache=True), cache_dir=tmp_path):
        first = BootstrapFewShot(metric=exact, max_bootstrapped_demos=10, num_threads=1).compile(
            _oracle.two_step(dspex), trainset=trainset(dspex, NUMBERS)
        )
        before = len(server.requests)
        again = BootstrapFewShot(metric=exact, max_bootstrapped_demos=10, num_threads=1).compile(
            _oracle.two_step(dspex), trainset=trainset(dspex, NUMBERS)
        )
    assert len(server.requests) == before
    hits = again.run_summary.total
    assert hits.lm_calls == hits.cache_hits == first.run_summary.total.paid_calls
    assert hits.paid_calls == 0 and hits.cost == 0.0
    assert first.run_summary.total.cost > 0


def test_random_search_phases_per_candidate_add_up_concurrently(server: LMServer) -> None:
    before = len(server.requests)
    optimizer = BootstrapFewShotWithRandomSearch(
        metric=exact, num_candidate_programs=2, num_threads=4
    )
    compiled = _compile(server, optimizer, valset=trainset(dspex, NUMBERS))
    paid = len(server.requests) - before
    phases = compiled.run_summary.phases
    assert set(phases) == {f"candidate {seed}" for seed in range(-3, 2)}
    assert sum(s.paid_calls for s in phases.values()) == paid
    # zero-shot and labeled-only candidates only run the valset: 2 calls per example
    assert phases["candidate -3"].lm_calls == phases["candidate -2"].lm_calls == 2 * len(NUMBERS)
    assert optimizer.budget.calls == {name: s.lm_calls for name, s in phases.items()}


def test_copro_summary_has_propose_and_evaluate(server: LMServer) -> None:
    before = len(server.requests)
    compiled = _compile(
        server, COPRO(metric=exact, breadth=2, depth=2), eval_kwargs={"num_threads": 2}
    )
    paid = len(server.requests) - before
    phases = compiled.run_summary.phases
    assert set(phases) == {"propose", "evaluate"}
    assert phases["propose"].lm_calls == 2 + 2  # one proposal call per predictor and depth
    assert compiled.run_summary.total.paid_calls == paid


# ---------------------------------------------------------------------- max_cost
def test_max_cost_stops_bootstrap_with_the_demos_found(server: LMServer) -> None:
    full = _compile(server, BootstrapFewShot(metric=exact, max_bootstrapped_demos=10), PRICED)
    per_call = full.run_summary.total.cost / full.run_summary.total.paid_calls
    limit = per_call * 5  # spent during the third example (two calls each)
    capped = BootstrapFewShot(
        metric=exact, max_bootstrapped_demos=10, num_threads=1, max_cost=limit
    )
    compiled = _compile(server, capped, PRICED)
    summary = compiled.run_summary
    assert summary.stopped == "max_cost"
    assert limit <= summary.total.cost < full.run_summary.total.cost
    assert summary.total.paid_calls == 6
    # the demos bootstrapped so far, as the uncapped run found them (2 passes, 9 fails, 4 passes)
    demos = [d["question"] for d in compiled.dump_state()["answer.predict"]["demos"][:2]]
    assert demos == ["Is 2 even or odd?", "Is 4 even or odd?"]
    assert all(d.get("augmented") for d in compiled.dump_state()["answer.predict"]["demos"][:2])


def test_max_cost_stops_random_search_with_the_best_so_far(server: LMServer) -> None:
    valset = trainset(dspex, NUMBERS)
    capped = BootstrapFewShotWithRandomSearch(
        metric=exact, num_candidate_programs=4, num_threads=4, max_cost=1e-9
    )
    compiled = _compile(server, capped, PRICED, valset=valset)
    assert compiled.run_summary.stopped == "max_cost"
    assert [c["seed"] for c in compiled.candidate_programs] == [-3]
    same = BootstrapFewShotWithRandomSearch(metric=exact, num_candidate_programs=4, num_threads=4)
    assert _state(compiled) == _state(_compile(server, same, PRICED, valset=valset, restrict=[-3]))


def test_max_cost_needs_a_known_price(server: LMServer, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(OptimizerError, match="no price is known for model 'openai/test'"):
        _compile(server, BootstrapFewShot(metric=exact, max_cost=1.0))
    monkeypatch.setattr(budget_mod, "_prices", {})
    register_price("openai/test", prompt=1e-6, completion=2e-6)
    assert price_of("openai/test") == (1e-6, 2e-6)
    compiled = _compile(server, BootstrapFewShot(metric=exact, max_cost=1.0))
    total = compiled.run_summary.total
    assert total.cost == pytest.approx(total.prompt_tokens * 1e-6 + total.completion_tokens * 2e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_cost": 0}, "max_cost must be a positive number"),
        ({"max_cost": "1"}, "max_cost must be a positive number"),
        ({"max_lm_calls": 0}, "max_lm_calls must be a positive integer"),
        ({"max_lm_calls": True}, "max_lm_calls must be a positive integer"),
    ],
)
def test_bad_budgets_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(OptimizerError, match=message):
        CallBudget(**kwargs)
    with pytest.raises(OptimizerError, match=message):
        BootstrapFewShot(metric=exact, **kwargs)


def test_litellm_prices_by_full_and_short_name() -> None:
    assert price_of("openai/gpt-4o-mini") == price_of("gpt-4o-mini") is not None
    assert price_of("openai/no-such-model-xyz") is None


# ---------------------------------------------------------------------- run dirs
def test_a_finished_run_dir_replays_without_lm_calls(server: LMServer, tmp_path: Path) -> None:
    def optimizer() -> BootstrapFewShot:
        return BootstrapFewShot(metric=exact, max_bootstrapped_demos=10, run_dir=tmp_path / "r")

    first = _compile(server, optimizer())
    before = len(server.requests)
    again = _compile(server, optimizer())  # no LM cache: everything comes from the checkpoint
    assert len(server.requests) == before
    assert _state(again) == _state(first)
    assert again.run_summary.resumed == ["bootstrap"]
    manifest = json.loads((tmp_path / "r" / "run.json").read_text())
    assert manifest["version"] == FORMAT_VERSION and manifest["optimizer"] == "BootstrapFewShot"


def test_mismatched_run_dir_names_what_differs(server: LMServer, tmp_path: Path) -> None:
    run_dir = tmp_path / "r"
    _compile(server, BootstrapFewShot(metric=exact, run_dir=run_dir))
    with pytest.raises(RunDirMismatch, match="different args") as caught:
        _compile(server, BootstrapFewShot(metric=exact, max_rounds=2, run_dir=run_dir))
    assert caught.value.parts == ["args"]
    with dspex.context(lm=_lm(server)), pytest.raises(RunDirMismatch) as caught:
        BootstrapFewShot(metric=exact, run_dir=run_dir).compile(
            _oracle.two_step(dspex), trainset=trainset(dspex, NUMBERS[:4])
        )
    assert caught.value.parts == ["trainset"]
    with pytest.raises(RunDirMismatch, match="holds a BootstrapFewShot run"):
        _compile(
            server,
            BootstrapFewShotWithRandomSearch(
                metric=exact, num_candidate_programs=1, run_dir=run_dir
            ),
        )
    # budgets and concurrency are not part of a run's identity: a run may resume with more
    _compile(
        server, BootstrapFewShot(metric=exact, num_threads=1, max_lm_calls=99, run_dir=run_dir)
    )


def test_resume_continues_the_run_in_the_directory(server: LMServer, tmp_path: Path) -> None:
    """``resume=path`` is ``run_dir=path`` that insists on a run to resume."""
    run_dir = tmp_path / "r"
    first = _compile(server, BootstrapFewShot(metric=exact, run_dir=run_dir))
    before = len(server.requests)
    again = _compile(server, BootstrapFewShot(metric=exact, resume=run_dir))
    assert len(server.requests) == before  # every example came from the checkpoint
    assert _state(again) == _state(first)
    assert again.run_summary.resumed == ["bootstrap"]
    same = BootstrapFewShot(metric=exact, resume=str(run_dir), run_dir=run_dir / ".." / "r")
    assert same.run_dir == str(run_dir)
    # another optimizer's or another student's run is refused as with run_dir
    with pytest.raises(RunDirMismatch, match="holds a BootstrapFewShot run"):
        _compile(
            server,
            BootstrapFewShotWithRandomSearch(
                metric=exact, num_candidate_programs=1, resume=run_dir
            ),
        )
    with pytest.raises(RunDirMismatch) as caught:
        _compile(server, BootstrapFewShot(metric=exact, max_rounds=2, resume=run_dir))
    assert caught.value.parts == ["args"]
    with dspex.context(lm=_lm(server)), pytest.raises(RunDirMismatch) as caught:
        BootstrapFewShot(metric=exact, resume=run_dir).compile(
            _oracle.repeated(dspex), trainset=trainset(dspex, NUMBERS)
        )
    assert caught.value.parts == ["student"]


def _feedback(
    gold: Any, pred: Any, trace: Any = None, pred_name: Any = None, pred_trace: Any = None
) -> float:
    return 1.0


def test_resume_needs_a_run_to_resume(server: LMServer, tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    for make in (
        lambda **kw: BootstrapFewShot(metric=exact, **kw),
        lambda **kw: BootstrapFewShotWithRandomSearch(metric=exact, **kw),
        lambda **kw: MIPROv2(metric=exact, **kw),
        lambda **kw: COPRO(metric=exact, **kw),
        lambda **kw: SIMBA(metric=exact, **kw),
        lambda **kw: GEPA(metric=_feedback, auto="light", reflection_lm=_lm(server), **kw),
    ):
        with dspex.context(lm=_lm(server)), pytest.raises(RunNotFound, match="no such run"):
            make(resume=missing)
    assert not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RunNotFound, match="holds no run") as caught:
        BootstrapFewShot(metric=exact, resume=empty)
    assert caught.value.path == str(empty)
    assert isinstance(caught.value, RunDirError) and isinstance(caught.value, FileNotFoundError)
    # removed between the constructor and the compile: refused at compile time too
    run_dir = tmp_path / "r"
    _compile(server, BootstrapFewShot(metric=exact, run_dir=run_dir))
    optimizer = BootstrapFewShot(metric=exact, resume=run_dir)
    (run_dir / "run.json").unlink()
    with pytest.raises(RunNotFound, match="holds no run"):
        _compile(server, optimizer)
    with pytest.raises(OptimizerError, match="different directories"):
        BootstrapFewShot(metric=exact, resume=run_dir, run_dir=tmp_path / "other")
    with pytest.raises(OptimizerError, match="not both"):  # GEPA: ours or the library's dir
        GEPA(
            metric=_feedback,
            auto="light",
            reflection_lm=_lm(server),
            resume=run_dir,
            log_dir=str(tmp_path / "g"),
        )


def test_unreadable_run_dirs_raise_run_dir_error(tmp_path: Path) -> None:
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "run.json").write_text(json.dumps({"version": 99, "optimizer": "X"}))
    with pytest.raises(RunDirError, match="run format 99"):
        RunDir(tmp_path / "v", "X", {})
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "run.json").write_text("{not json")
    with pytest.raises(RunDirError, match="cannot read"):
        RunDir(tmp_path / "c", "X", {})
    (tmp_path / "file").write_text("")
    with pytest.raises(RunDirError, match="cannot use run_dir"):
        RunDir(tmp_path / "file", "X", {})
    ok = RunDir(tmp_path / "ok", "X", {})
    with pytest.raises(RunDirError, match="not JSON-serializable"):
        ok.save("k", {"x": object()})
    assert ok.load("k") is None  # the failed save left nothing behind
    assert not list((tmp_path / "ok" / "checkpoints").iterdir())


def test_run_api_checkpoint_restore_and_phases(server: LMServer, tmp_path: Path) -> None:
    budget = CallBudget()
    run = Run("Mine", budget, run_dir=tmp_path / "m", identity={"args": {"k": 1}})
    assert run.restore("step") is None
    with dspex.context(lm=_lm(server)), run:
        with run.phase("propose"):
            dspex.Predict("question -> answer")(question="Is 4 even?")
        run.checkpoint("step", {"done": 1, "scores": [0.5, 1.0]})
    again = Run("Mine", CallBudget(), run_dir=tmp_path / "m", identity={"args": {"k": 1}})
    assert again.restore("step") == {"done": 1, "scores": [0.5, 1.0]}
    assert again.summary.resumed == ["step"]
    assert run.summary.phases["propose"].lm_calls == 1
    assert run.summary.to_dict()["total"]["paid_calls"] == 1


def test_each_compile_has_its_own_summary_and_budget(server: LMServer) -> None:
    optimizer = BootstrapFewShot(
        metric=exact, max_bootstrapped_demos=10, num_threads=1, max_lm_calls=4
    )
    first = _compile(server, optimizer)
    second = _compile(server, optimizer)
    assert first.run_summary.total.lm_calls == second.run_summary.total.lm_calls == 4
    assert optimizer.budget.calls == {"bootstrap": 4}
    assert second.run_summary.stopped == "max_lm_calls"


def test_copro_budget_stops_with_the_best_instruction_so_far(server: LMServer) -> None:
    full = _compile(server, COPRO(metric=exact, breadth=2, depth=2), eval_kwargs={"num_threads": 1})
    # 2 proposal calls, then predictor 1's 2 candidates x 10 examples x 2 calls: spent there
    capped = COPRO(metric=exact, breadth=2, depth=2, max_lm_calls=3)
    compiled = _compile(server, capped, eval_kwargs={"num_threads": 1})
    summary = compiled.run_summary
    assert summary.stopped == "max_lm_calls"
    assert summary.phases["propose"].lm_calls == 2
    assert summary.phases["evaluate"].lm_calls == 2 * 2 * len(NUMBERS)
    assert summary.total.lm_calls < full.run_summary.total.lm_calls
    scored = {(c["instruction"], c["prefix"]) for c in compiled.candidate_programs}
    assert len(scored) == 2 and all(c["depth"] == 0 for c in compiled.candidate_programs)
    best = max(compiled.candidate_programs, key=lambda c: c["score"])
    assert compiled.draft.signature.instructions == best["instruction"]


class _Terminal:
    """A stdout that says it is a terminal and keeps what is written."""

    def __init__(self) -> None:
        self.text: list[str] = []

    def write(self, text: str) -> int:
        self.text.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return True


def test_progress_bars_only_on_a_terminal(
    server: LMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    quiet = Run("X", CallBudget(), display_progress=True)  # pytest's stdout is no terminal
    with quiet.phase("bootstrap", total=3) as bar:
        assert bar._progress is None
    terminal = _Terminal()
    monkeypatch.setattr("sys.stdout", terminal)
    assert Run("X", CallBudget(), display_progress=False).display_progress is False
    _compile(server, BootstrapFewShot(metric=exact, max_bootstrapped_demos=10, num_threads=2))
    shown = "".join(terminal.text)
    assert "bootstrap" in shown and f"{len(NUMBERS)}/{len(NUMBERS)}" in shown


def test_another_lm_is_another_run(server: LMServer, tmp_path: Path) -> None:
    run_dir = tmp_path / "r"
    _compile(server, BootstrapFewShot(metric=exact, run_dir=run_dir))
    with pytest.raises(RunDirMismatch) as caught:
        _compile(server, BootstrapFewShot(metric=exact, run_dir=run_dir), model=PRICED)
    assert caught.value.parts == ["lm"]
    with dspex.context(lm=_lm(server).copy(temperature=0.5)), pytest.raises(RunDirMismatch):
        BootstrapFewShot(metric=exact, run_dir=run_dir).compile(
            _oracle.two_step(dspex), trainset=trainset(dspex, NUMBERS)
        )


def test_checkpoints_take_numpy_scores_and_predictions(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    run_dir = RunDir(tmp_path / "n", "X", {})
    state = {
        "scores": [np.float64(0.5), np.bool_(True), np.int64(3)],
        "array": np.array([1, 2]),
        "subscore": dspex.Prediction(score=0.25, feedback="ok"),
    }
    run_dir.save("k", state)
    assert run_dir.load("k") == {
        "scores": [0.5, True, 3],
        "array": [1, 2],
        "subscore": {"score": 0.25, "feedback": "ok"},
    }


def test_a_compile_that_fails_before_a_checkpoint_leaves_the_dir_free(
    server: LMServer, tmp_path: Path
) -> None:
    run_dir = tmp_path / "r"
    with pytest.raises(OptimizerError, match="no price"):
        _compile(server, BootstrapFewShot(metric=exact, max_cost=1.0, run_dir=run_dir))
    assert not (run_dir / "run.json").exists()
    _compile(server, BootstrapFewShot(metric=exact, max_rounds=2, run_dir=run_dir))
    assert (run_dir / "run.json").exists()


def test_a_budget_met_by_the_last_call_is_not_a_stop(server: LMServer) -> None:
    # 10 examples x 2 calls: the whole trainset fits max_lm_calls=20 exactly
    optimizer = BootstrapFewShot(
        metric=exact, max_bootstrapped_demos=10, num_threads=1, max_lm_calls=2 * len(NUMBERS)
    )
    compiled = _compile(server, optimizer)
    assert compiled.run_summary.total.lm_calls == 2 * len(NUMBERS)
    assert compiled.run_summary.stopped is None


def test_one_progress_bar_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    from dspex.teleprompt.run import PhaseProgress

    monkeypatch.setattr("sys.stdout", _Terminal())
    outer = PhaseProgress("outer", 2, enabled=True)
    inner = PhaseProgress("inner", 2, enabled=True)  # e.g. BootstrapFewShot inside MIPROv2
    assert outer._progress is not None and inner._progress is None
    inner.advance()
    inner.close()
    outer.close()
    again = PhaseProgress("again", 1, enabled=True)
    assert again._progress is not None
    again.close()
