"""MIPROv2 without DSPy: argument checks, the LM-call budget, log_dir, async compile."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import dspex
from dspex.errors import OptimizerError
from dspex.teleprompt import MIPROv2
from dspex.testing import LMServer
from tests.teleprompt import _oracle
from tests.teleprompt._oracle import exact, trainset

pytest.importorskip("optuna")

NUMBERS = [2, 9, 4, 7, 5, 15, 8, 11, 6, 13]


@pytest.fixture(scope="module")
def server() -> Iterator[LMServer]:
    with LMServer() as srv:
        _oracle.serve_oracle(srv)
        yield srv


@pytest.fixture
def lm(server: LMServer) -> Iterator[Any]:
    _oracle.serve_oracle(server)
    lm = dspex.LM("openai/test", api_base=server.url, api_key="k", cache=False, num_retries=0)
    with dspex.context(lm=lm):
        yield lm


def _small(**kwargs: Any) -> MIPROv2:
    return MIPROv2(metric=exact, auto=None, num_candidates=3, num_threads=2, **kwargs)


def test_argument_errors(lm: Any) -> None:
    with pytest.raises(ValueError, match="Invalid value for auto"):
        MIPROv2(metric=exact, auto="huge")  # type: ignore[arg-type]
    with pytest.raises(OptimizerError, match="num_threads"):
        MIPROv2(metric=exact, num_threads=0)
    with dspex.context(lm=None), pytest.raises(ValueError, match="prompt_model and task_model"):
        MIPROv2(metric=exact)
    program, data = _oracle.two_step(dspex), trainset(dspex, NUMBERS)
    with pytest.raises(ValueError, match="User confirmation is removed"):
        MIPROv2(metric=exact).compile(program, trainset=data, requires_permission_to_run=True)
    with pytest.raises(ValueError, match="recommend setting num_trials to ~"):
        _small().compile(program, trainset=data)
    with pytest.raises(ValueError, match="num_candidates and num_trials cannot be set"):
        MIPROv2(metric=exact).compile(program, trainset=data, num_trials=3)
    with pytest.raises(ValueError, match="Trainset cannot be empty"):
        _small().compile(program, trainset=[], num_trials=2)
    with pytest.raises(ValueError, match="at least 2 examples"):
        _small().compile(program, trainset=data[:1], num_trials=2)
    with pytest.raises(ValueError, match="Minibatch size cannot exceed"):
        _small().compile(program, trainset=data, num_trials=2, minibatch_size=50)
    assert lm is not None


def test_budget_stops_the_search_and_returns_the_best_so_far(lm: Any) -> None:
    optimizer = _small(max_lm_calls=60)
    compiled = optimizer.compile(
        _oracle.two_step(dspex),
        trainset=trainset(dspex, NUMBERS),
        num_trials=20,
        minibatch=False,
    )
    calls = optimizer.budget.calls
    assert set(calls) == {"bootstrap", "propose", "search"}
    valset_runs = 8 * 2  # 8 examples, 2 LM calls per program run
    # the search stops after the trial during which the budget ran out
    assert optimizer.budget.total < 60 + valset_runs
    trials = [n for n in compiled.trial_logs if n > 1]
    assert 0 < len(trials) < 20
    assert compiled.score == max(c["score"] for c in compiled.candidate_programs)


def test_log_dir_saves_every_evaluated_program(lm: Any, tmp_path: Path) -> None:
    compiled = _small(log_dir=str(tmp_path)).compile(
        _oracle.two_step(dspex),
        trainset=trainset(dspex, NUMBERS),
        num_trials=4,
        minibatch_size=3,
        minibatch_full_eval_steps=2,
    )
    saved = sorted(p.name for p in (tmp_path / "evaluated_programs").iterdir())
    assert "program_-1.json" in saved and any(name.endswith("_full_eval.json") for name in saved)
    for log in compiled.trial_logs.values():
        for key, value in log.items():
            if key.endswith("_path"):
                state = json.loads(Path(value).read_text())
                assert set(state) >= {"draft", "answer.predict"}
    reloaded = _oracle.two_step(dspex)
    reloaded.load(compiled.trial_logs[1]["full_eval_program_path"])


def test_acompile_gives_the_sync_result(lm: Any) -> None:
    kwargs: dict[str, Any] = {"num_trials": 3, "minibatch": False}
    sync = _small(seed=3).compile(
        _oracle.two_step(dspex), trainset=trainset(dspex, NUMBERS), **kwargs
    )
    other = asyncio.run(
        _small(seed=3).acompile(
            _oracle.two_step(dspex), trainset=trainset(dspex, NUMBERS), **kwargs
        )
    )
    assert sync.score > 0
    assert other.dump_state() == sync.dump_state()
    assert [c["score"] for c in other.candidate_programs] == [
        c["score"] for c in sync.candidate_programs
    ]


def test_zero_shot_optimizes_instructions_only(lm: Any) -> None:
    compiled = MIPROv2(
        metric=exact, auto=None, num_candidates=2, max_bootstrapped_demos=0, max_labeled_demos=0
    ).compile(
        _oracle.two_step(dspex), trainset=trainset(dspex, NUMBERS), num_trials=2, minibatch=False
    )
    assert all(not p.demos for p in compiled.predictors())
    assert all("_predictor_demos" not in k for log in compiled.trial_logs.values() for k in log)


def test_routed_name_builds_the_native_optimizer(lm: Any) -> None:
    optimizer = dspex.MIPROv2(metric=exact)
    assert isinstance(optimizer, MIPROv2) and optimizer.implementation == "native"


def test_sync_compile_inside_a_running_loop_keeps_the_context(lm: Any) -> None:
    """A notebook calls ``compile`` with an event loop running: the configured LM must still
    reach every evaluation (run_sync's helper thread gets the caller's context)."""

    async def in_notebook() -> Any:
        return _small(seed=3).compile(
            _oracle.two_step(dspex),
            trainset=trainset(dspex, NUMBERS),
            num_trials=2,
            minibatch=False,
        )

    compiled = asyncio.run(in_notebook())
    assert compiled.score > 0
    assert all(c["score"] > 0 for c in compiled.candidate_programs)
