"""Budgets and run summaries of MIPROv2, SIMBA and GEPA (the API BootstrapFewShot, random
search and COPRO have, ``tests/teleprompt/test_run.py``): each summary adds up to what the LM
server was paid, and a spent ``max_lm_calls``/``max_cost`` stops the run with the best
program so far and names the budget in ``run_summary.stopped``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import dspex
from dspex.teleprompt import MIPROv2
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


def _lm(server: LMServer, model: str = "openai/test") -> Any:
    return dspex.LM(model, api_base=server.url, api_key="k", cache=False, num_retries=0)


# ---------------------------------------------------------------------- MIPROv2
def _mipro(server: LMServer, model: str = "openai/test", **kwargs: Any) -> Any:
    pytest.importorskip("optuna")
    with dspex.context(lm=_lm(server, model)):
        optimizer = MIPROv2(
            metric=exact, auto=None, num_candidates=3, num_threads=1, seed=3, **kwargs
        )
        return optimizer.compile(
            _oracle.two_step(dspex),
            trainset=trainset(dspex, NUMBERS),
            num_trials=6,
            minibatch=False,
        )


def test_mipro_summary_adds_up_to_the_server_requests(server: LMServer) -> None:
    before = len(server.requests)
    compiled = _mipro(server)
    paid = len(server.requests) - before
    summary = compiled.run_summary
    assert list(summary.phases) == ["bootstrap", "propose", "search"]
    assert all(stats.lm_calls > 0 for stats in summary.phases.values())
    assert summary.total.paid_calls == paid and summary.stopped is None
    assert "search" in str(summary)


def test_mipro_max_cost_stops_the_search_with_the_best_so_far(server: LMServer) -> None:
    full = _mipro(server, PRICED)
    search = full.run_summary.phases["search"]
    before_search = full.run_summary.total.cost - search.cost
    limit = before_search + search.cost / 3  # spent a third into the search
    compiled = _mipro(server, PRICED, max_cost=limit)
    summary = compiled.run_summary
    assert summary.stopped == "max_cost"
    assert limit <= summary.total.cost < full.run_summary.total.cost
    assert 1 < len(compiled.trial_logs) < len(full.trial_logs)
    assert compiled.score == max(c["score"] for c in compiled.candidate_programs)


def test_mipro_budget_spent_in_bootstrap_returns_the_student(server: LMServer) -> None:
    student = _oracle.two_step(dspex)
    before = len(server.requests)
    compiled = _mipro(server, max_lm_calls=3)
    summary = compiled.run_summary
    assert summary.stopped == "max_lm_calls"
    assert set(summary.phases) == {"bootstrap"}  # no proposal, no search
    assert summary.total.paid_calls == len(server.requests) - before
    assert compiled.dump_state() == student.dump_state()


# ---------------------------------------------------------------------- SIMBA
def _simba(server: LMServer, model: str = "openai/test", **kwargs: Any) -> Any:
    from dspex.teleprompt import SIMBA

    with dspex.context(lm=_lm(server, model)):
        optimizer = SIMBA(
            metric=exact,
            bsize=4,
            num_candidates=2,
            max_steps=3,
            max_demos=2,
            num_threads=1,
            **kwargs,
        )
        return optimizer.compile(
            _oracle.two_step(dspex), trainset=trainset(dspex, NUMBERS[:8]), seed=5
        )


def test_simba_summary_adds_up_to_the_server_requests(server: LMServer) -> None:
    before = len(server.requests)
    compiled = _simba(server)
    summary = compiled.run_summary
    assert summary.total.paid_calls == len(server.requests) - before
    assert summary.stopped is None and summary.resumed == []
    assert {"step 1: trajectories", "step 3: candidates", "validation"} <= set(summary.phases)


def test_simba_max_cost_stops_with_the_best_so_far(server: LMServer) -> None:
    full = _simba(server, PRICED)
    limit = full.run_summary.phases["step 1: trajectories"].cost * 2.5  # spent in step 2
    compiled = _simba(server, PRICED, max_cost=limit)
    summary = compiled.run_summary
    assert summary.stopped == "max_cost"
    assert limit <= summary.total.cost < full.run_summary.total.cost
    assert "step 3: trajectories" not in summary.phases
    assert compiled.candidate_programs  # ranked by mini-batch score (validation cut short)
    assert compiled.candidate_programs[0]["score"] == max(
        c["score"] for c in compiled.candidate_programs
    )


# ---------------------------------------------------------------------- GEPA
def gepa_metric(
    gold: Any, pred: Any, trace: Any = None, pred_name: Any = None, pred_trace: Any = None
) -> float:
    return float(exact(gold, pred, trace))


def _gepa(server: LMServer, model: str = "openai/test", **kwargs: Any) -> Any:
    pytest.importorskip("gepa")
    from dspex.teleprompt import GEPA

    with dspex.context(lm=_lm(server, model)):
        optimizer = GEPA(
            metric=gepa_metric,
            max_metric_calls=80,
            reflection_lm=_lm(server, model),
            num_threads=1,
            track_stats=True,
            **kwargs,
        )
        return optimizer.compile(
            _oracle.two_step(dspex),
            trainset=trainset(dspex, NUMBERS[:6]),
            valset=trainset(dspex, NUMBERS[6:]),
        )


def test_gepa_summary_adds_up_to_the_server_requests(server: LMServer) -> None:
    before = len(server.requests)
    compiled = _gepa(server)
    summary = compiled.run_summary
    assert summary.total.paid_calls == len(server.requests) - before
    assert set(summary.phases) == {"evaluate", "reflection"}
    assert summary.stopped is None and summary.resumed == []


def test_gepa_max_cost_stops_between_iterations(server: LMServer) -> None:
    full = _gepa(server, PRICED)
    limit = full.run_summary.total.cost / 3
    compiled = _gepa(server, PRICED, max_cost=limit)
    summary = compiled.run_summary
    assert summary.stopped == "max_cost"
    assert limit <= summary.total.cost < full.run_summary.total.cost
    results = compiled.detailed_results
    assert results.total_metric_calls < full.detailed_results.total_metric_calls
    best = results.candidates[results.best_idx]
    assert compiled.dump_state() == best.dump_state()


def test_gepa_run_dir_and_log_dir_are_exclusive(tmp_path: Path) -> None:
    pytest.importorskip("gepa")
    from dspex.errors import OptimizerError
    from dspex.teleprompt import GEPA

    with pytest.raises(OptimizerError, match="not both"):
        GEPA(
            metric=gepa_metric,
            max_metric_calls=10,
            reflection_lm=object(),
            run_dir=tmp_path / "a",
            log_dir=str(tmp_path / "b"),
        )
