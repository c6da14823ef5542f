"""Issue 11 item 5 on the ``dspy`` pool: DSPy sessions (``rehydrate=True``) under worker kills.

Many remote ``dspy.Predict`` modules (one DSPy session each, pinned to a worker) are called
concurrently against a real LMServer while a worker of the ``dspy`` pool is SIGKILLed at a fixed
interval. A call that was running on the killed worker fails with one typed ``WorkerCrashed``
naming that worker; every other call — including the calls of sessions that lived on the killed
worker and are rebuilt from their recipes elsewhere — succeeds. Every call ends exactly once,
and nothing hangs.
"""

from __future__ import annotations

import asyncio
import collections
import os
import random
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

import dspex
from dspex.errors import WorkerCrashed
from dspex.testing import LMServer

pytestmark = pytest.mark.dspy


@pytest.fixture
def dspy_lm(server: LMServer) -> Iterator[dspex.LM]:
    from dspex.pool import shutdown_pools

    shutdown_pools(cancel=True)  # a fresh dspy pool for this test
    lm = dspex.LM("openai/test", api_base=server.url, api_key="k", cache=False, num_retries=0)
    dspex.configure(lm=lm)
    yield lm
    shutdown_pools(cancel=True)


def run_sessions_under_kills(
    calls: int, concurrency: int, sessions: int, kill_every: float
) -> dict[str, Any]:
    """``calls`` calls spread over ``sessions`` remote modules, ``concurrency`` in flight, a
    busy worker of the dspy pool killed every ``kill_every`` seconds. Returns the tallies."""
    from dspex.bridge.session import dspy_pool

    modules = [
        dspex.Predict("question -> answer", implementation="dspy", rehydrate=True)
        for _ in range(sessions)
    ]
    for module in modules:  # create every object before the kills start
        assert module(question="warm").answer
    pool: Any = dspy_pool()
    killed: set[int] = set()
    outcomes: dict[int, list[Any]] = {i: [] for i in range(calls)}

    async def main() -> None:
        sem = asyncio.Semaphore(concurrency)
        rng = random.Random(11)

        async def one(i: int) -> None:
            async with sem:
                try:
                    outcomes[i].append(await modules[i % sessions].acall(question=f"q{i}"))
                except Exception as exc:
                    outcomes[i].append(exc)

        async def killer() -> None:
            wait = 0.2  # the first kill comes early, so even a fast run sees kills
            while True:
                await asyncio.sleep(wait)
                wait = kill_every
                busy = [w.pid for w in pool._workers.values() if w.state == "busy" and w.pid]
                if busy:
                    pid = rng.choice(busy)
                    killed.add(pid)
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass

        task = asyncio.create_task(killer())
        try:
            # a generous bound: a hang fails the test instead of blocking the suite
            await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(calls))), 1800)
        finally:
            task.cancel()

    started = time.monotonic()
    asyncio.run(main())
    elapsed = time.monotonic() - started
    terminal = [len(o) for o in outcomes.values()]
    errors = [o[0] for o in outcomes.values() if o and isinstance(o[0], BaseException)]
    crashed = [e.fields.get("pid") for e in errors if isinstance(e, WorkerCrashed)]
    return {
        "terminal": terminal,
        "errors": errors,
        "crashed": crashed,
        "killed": killed,
        "elapsed": elapsed,
        "ok": sum(1 for o in outcomes.values() if o and isinstance(o[0], dspex.Prediction)),
    }


def check(tally: dict[str, Any]) -> None:
    assert all(n == 1 for n in tally["terminal"])  # exactly one terminal state per call
    errors = tally["errors"]
    # the only failures: typed WorkerCrashed of calls that were running on a killed worker
    assert all(isinstance(e, WorkerCrashed) for e in errors), [
        f"{type(e).__name__}: {e} {getattr(e, 'fields', None)}"
        for e in errors
        if not isinstance(e, WorkerCrashed)
    ][:5]
    crashed = tally["crashed"]
    assert set(crashed) <= tally["killed"], set(crashed) - tally["killed"]
    repeated = {pid: n for pid, n in collections.Counter(crashed).items() if n > 1}
    assert not repeated  # one call runs on a worker: one crash per kill at most
    assert tally["killed"]  # the test did kill workers


def test_dspy_sessions_under_kills_small(dspy_lm: dspex.LM) -> None:
    tally = run_sessions_under_kills(calls=300, concurrency=16, sessions=8, kill_every=1.0)
    check(tally)
    assert tally["ok"] == 300 - len(tally["errors"])


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_dspy_sessions_5000_calls_concurrency_64_kill_per_second(dspy_lm: dspex.LM) -> None:
    tally = run_sessions_under_kills(calls=5000, concurrency=64, sessions=64, kill_every=1.0)
    kinds = collections.Counter(type(e).__name__ for e in tally["errors"])
    per_pid = collections.Counter(collections.Counter(tally["crashed"]).values())
    print(f"\nerrors by type {dict(kinds)}; WorkerCrashed per killed pid {dict(per_pid)}")
    print(
        f"5000 calls: {tally['ok']} ok, {len(tally['errors'])} errors, "
        f"{len(tally['killed'])} workers killed, {tally['elapsed']:.0f} s"
    )
    check(tally)
    assert tally["ok"] == 5000 - len(tally["errors"])
