"""Resumable runs: a compile killed with SIGKILL part-way and started again with the same
``run_dir`` ends with the state an uninterrupted run compiles, paying (almost) no LM call
twice: the checkpoints hold the optimizer's state and the on-disk LM cache answers the calls
made again since the last checkpoint. Each compile runs in its own process (``_run_child``)
against one LMServer in this process, whose request count is what was paid.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dspex.testing import LMServer, RecordedRequest
from dspex.testing.answers import answer_messages, read_prompt
from tests.teleprompt import _oracle

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 120.0  # seconds: a child that takes longer is broken, not slow


def _reply(request: RecordedRequest) -> str:
    """The oracle; COPRO's proposer prompts get generated proposals, and answers depend on
    the instruction text so that COPRO's candidates score differently."""
    system = str(request.messages[0]["content"])
    spec = read_prompt(system, request.last_user_message)
    if spec is not None and "proposed_instruction" in spec.fields:
        return answer_messages(request.messages, choice=0)
    return _oracle.instruction_sensitive(request)


@pytest.fixture(scope="module")
def server() -> Iterator[LMServer]:
    with LMServer() as srv:
        srv.add_rule(None, _reply)
        yield srv


def _start(config: dict[str, Any]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.teleprompt._run_child", json.dumps(config)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _finish(proc: subprocess.Popen[bytes], out: Path) -> dict[str, Any]:
    _, err = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 0, err.decode()[-3000:]
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def _run(config: dict[str, Any], out: Path) -> dict[str, Any]:
    return _finish(_start({**config, "out": str(out)}), out)


def _kill_when_blocked(proc: subprocess.Popen[bytes], marker: Path) -> None:
    """Wait (polling) until the child blocks inside its metric, then SIGKILL it."""
    stop = time.monotonic() + DEADLINE
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(f"child ended before blocking: {proc.communicate()[1].decode()}")
        if time.monotonic() > stop:
            proc.kill()
            proc.communicate()
            raise AssertionError("child never reached the blocking metric call")
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=DEADLINE)  # reaps it and closes its pipes
    assert proc.returncode == -signal.SIGKILL


def _interrupted_then_resumed(
    server: LMServer,
    tmp_path: Path,
    config: dict[str, Any],
    block_after: int,
    *,
    resume: bool = False,
) -> tuple[dict[str, Any], dict[str, Any], int, int]:
    """(uninterrupted result, resumed result, paid calls uninterrupted, paid calls killed +
    resumed); the two runs use separate caches and run dirs. With ``resume`` the second
    start passes ``resume=<run dir>`` instead of ``run_dir=<run dir>``."""
    base = {**config, "url": server.url}
    before = len(server.requests)
    whole = _run(
        {**base, "cache_dir": str(tmp_path / "cache-a"), "run_dir": str(tmp_path / "run-a")},
        tmp_path / "a.json",
    )
    paid_whole = len(server.requests) - before

    before = len(server.requests)
    resumable = {**base, "cache_dir": str(tmp_path / "cache-b"), "run_dir": str(tmp_path / "run-b")}
    marker = tmp_path / "blocked"
    proc = _start({**resumable, "block_after": block_after, "marker": str(marker), "out": "-"})
    _kill_when_blocked(proc, marker)
    checkpoints = {}
    for path in (tmp_path / "run-b" / "checkpoints").glob("*.json"):
        saved = json.loads(path.read_text())
        checkpoints[saved["key"]] = saved["state"]
    assert checkpoints, "killed before any checkpoint was written"
    paid_killed = len(server.requests) - before
    assert 0 < paid_killed < paid_whole  # killed part-way
    resumed = _run({**resumable, "resume": resume}, tmp_path / "b.json")
    paid_resumed = len(server.requests) - before
    print(f"{config}: paid uninterrupted {paid_whole}, killed {paid_killed}, total {paid_resumed}")
    resumed["at_kill"] = checkpoints
    return whole, resumed, paid_whole, paid_resumed


def _paid(summary: dict[str, Any]) -> int:
    return int(summary["total"]["paid_calls"])


def test_bootstrap_killed_at_half_resumes_to_the_same_demos(
    server: LMServer, tmp_path: Path
) -> None:
    # 20 examples, one metric call each: killed inside the 10th.
    config = {"kind": "bootstrap", "threads": 1}
    whole, resumed, paid_whole, paid_resumed = _interrupted_then_resumed(
        server, tmp_path, config, block_after=10
    )
    assert resumed["at_kill"]["bootstrap"]["consumed"] == 9
    assert resumed["state"] == whole["state"]
    assert paid_resumed <= 1.05 * paid_whole
    # the summary of each process adds up to what the server saw it pay
    assert _paid(whole["summary"]) == paid_whole
    assert resumed["summary"]["resumed"] == ["bootstrap"]
    phases = resumed["summary"]["phases"]
    assert list(phases) == ["bootstrap"]
    # the resumed process makes again only the calls of the example in flight (cache hits)
    assert phases["bootstrap"]["cache_hits"] == 2
    assert phases["bootstrap"]["lm_calls"] == 2 * (20 - 9)
    checkpoint = json.loads((tmp_path / "run-b" / "checkpoints" / "bootstrap.json").read_text())
    assert checkpoint["version"] == 1 and checkpoint["state"]["consumed"] == 20


def test_bootstrap_concurrent_resume_same_state(server: LMServer, tmp_path: Path) -> None:
    config = {"kind": "bootstrap", "threads": 4}
    whole, resumed, paid_whole, paid_resumed = _interrupted_then_resumed(
        server, tmp_path, config, block_after=10
    )
    assert resumed["at_kill"]["bootstrap"]["consumed"] < 20
    assert resumed["state"] == whole["state"]
    # requests in flight at the kill (at most one per other running example) are paid again
    assert paid_resumed <= paid_whole + 3


def test_random_search_killed_at_half_resumes_to_the_same_winner(
    server: LMServer, tmp_path: Path
) -> None:
    # 7 candidates (-3..3) scored on 20 examples in seed order: block inside candidate 0.
    config = {"kind": "random_search", "threads": 1, "examples": 10}
    whole, resumed, paid_whole, paid_resumed = _interrupted_then_resumed(
        server, tmp_path, config, block_after=50, resume=True
    )
    assert resumed["state"] == whole["state"]
    assert paid_resumed <= 1.05 * paid_whole
    assert _paid(whole["summary"]) == paid_whole
    restored = resumed["summary"]["resumed"]
    assert sorted(restored) == sorted(resumed["at_kill"])
    assert 0 < len(restored) < 7
    assert restored and all(key.startswith("candidate ") for key in restored)
    assert set(restored).isdisjoint(resumed["summary"]["phases"])


def test_copro_killed_after_a_depth_resumes_to_the_same_program(
    server: LMServer, tmp_path: Path
) -> None:
    # 6 examples; depth 0 scores 3 candidates x 2 predictors = 36 metric calls.
    config = {"kind": "copro", "examples": 6}
    whole, resumed, paid_whole, paid_resumed = _interrupted_then_resumed(
        server, tmp_path, config, block_after=50
    )
    assert resumed["state"] == whole["state"]
    assert paid_resumed <= 1.05 * paid_whole
    assert resumed["summary"]["resumed"] == ["copro"]
    assert resumed["at_kill"]["copro"]["next_depth"] == 1
    assert _paid(whole["summary"]) == paid_whole
    assert set(whole["summary"]["phases"]) == {"propose", "evaluate"}


MIPRO = {
    "kind": "mipro",
    "numbers": [2, 9, 4, 7, 5, 15, 6, 8],
    "val": [10, 11, 12, 13, 16, 17, 18, 19, 20, 21],
    "compile": {"num_trials": 8, "minibatch_size": 4, "minibatch_full_eval_steps": 3},
}


@pytest.mark.parametrize("threads", [1, pytest.param(4, marks=pytest.mark.slow)])
def test_mipro_killed_mid_search_resumes_to_the_same_program(
    server: LMServer, tmp_path: Path, threads: int
) -> None:
    """Started again with ``resume=<run dir>`` after being killed inside the search (~45 of the run's 77 metric calls: a few bootstraps, the
    default program's 10, then trials of 4): the resumed run replays the recorded scores, so
    optuna's sampler and the minibatch draws continue where they were, and it ends with the
    uninterrupted run's choices trial for trial, scores and compiled program."""
    pytest.importorskip("optuna")
    config = {**MIPRO, "threads": threads}
    whole, resumed, paid_whole, paid_resumed = _interrupted_then_resumed(
        server, tmp_path, config, block_after=45, resume=True
    )
    assert set(resumed["at_kill"]) == {"demo_sets", "instructions", "search"}
    scored = resumed["at_kill"]["search"]["scores"]
    assert "default" in scored and 0 < len(scored) < len(whole["trials"])
    assert resumed["trials"] == whole["trials"]
    assert resumed["scores"] == whole["scores"]
    assert resumed["state"] == whole["state"]
    assert sorted(resumed["summary"]["resumed"]) == ["demo_sets", "instructions", "search"]
    assert _paid(whole["summary"]) == paid_whole
    # the resumed process made no bootstrap or proposal call at all
    phases = resumed["summary"]["phases"]
    assert phases["bootstrap"]["lm_calls"] == phases["propose"]["lm_calls"] == 0
    # and evaluated only what the killed run had not scored (replayed scores cost no call)
    assert 0 < phases["search"]["lm_calls"] < whole["summary"]["phases"]["search"]["lm_calls"]
    # requests in flight at the kill (one program run per thread) are paid again at most
    assert paid_resumed <= paid_whole + 2 * threads
    assert paid_resumed <= 1.05 * paid_whole


@pytest.mark.parametrize("threads", [1, pytest.param(4, marks=pytest.mark.slow)])
def test_simba_killed_mid_run_resumes_to_the_same_program(
    server: LMServer, tmp_path: Path, threads: int
) -> None:
    """4 steps of 20 metric calls (8 trajectories, 3 candidates x 4 examples), then the final
    scoring: killed inside step 3, resumed from the checkpoint after step 2 (both RNGs, the
    data order, the pool and the winners restored)."""
    config = {"kind": "simba", "threads": threads, "examples": 8, "compile": {"seed": 5}}
    whole, resumed, paid_whole, paid_resumed = _interrupted_then_resumed(
        server, tmp_path, config, block_after=50
    )
    assert resumed["at_kill"]["simba"]["next_step"] == 2
    assert resumed["state"] == whole["state"]
    assert resumed["scores"] == whole["scores"]
    assert resumed["trials"] == whole["trials"]
    assert resumed["summary"]["resumed"] == ["simba"]
    phases = resumed["summary"]["phases"]
    assert not any(name.startswith(("step 1", "step 2")) for name in phases)
    assert _paid(whole["summary"]) == paid_whole
    assert paid_resumed <= paid_whole + 2 * threads
    assert paid_resumed <= 1.05 * paid_whole


@pytest.mark.parametrize("threads", [1, pytest.param(4, marks=pytest.mark.slow)])
def test_gepa_killed_mid_run_resumes_to_the_same_program(
    server: LMServer, tmp_path: Path, threads: int
) -> None:
    """GEPA resumes from the ``gepa`` library's own state (saved before every iteration) plus
    what the library leaves out (its generator, the sampler's epoch, the merge schedule), saved
    with it by the adapter: the resumed process starts at the iteration the kill interrupted,
    makes the uninterrupted run's draws and ends with its candidates, scores and program."""
    pytest.importorskip("gepa")
    config = {"kind": "gepa", "threads": threads, "examples": 8, "val": [10, 11, 12, 13, 16]}
    whole, resumed, paid_whole, paid_resumed = _interrupted_then_resumed(
        server, tmp_path, config, block_after=80
    )
    assert resumed["summary"]["resumed"] == ["gepa_state"]
    assert (tmp_path / "run-b" / "gepa" / "gepa_state.bin").exists()
    assert whole["candidates"] >= 2  # a reflected candidate was accepted: not only the seed
    assert resumed["state"] == whole["state"]
    assert resumed["scores"] == whole["scores"]
    assert resumed["parents"] == whole["parents"]
    assert resumed["metric_calls_total"] == whole["metric_calls_total"]
    # the resumed process made fewer metric calls itself: the seed's valset scores were read
    # back, and the iterations before the kill were not run again
    assert resumed["metric_calls"] < whole["metric_calls"] - len(config["val"])
    # the calls of the iteration in flight at the kill are made again, from the LM cache
    # (requests in flight at the kill, one program run per thread, are paid again at most)
    assert paid_resumed <= paid_whole + 2 * threads
    assert _paid(whole["summary"]) == paid_whole
