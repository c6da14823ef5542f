"""A hypothesis state machine over calls, kills, cancellations and timeouts.

Invariants after every step (checked atomically on the pool's thread): live workers never
exceed the size, every busy worker serves a call whose caller still waits (or whose
cancellation grace is running), and at the end every call reached exactly one terminal
state and the pool is back to its full size, idle.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import signal
import threading
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from conftest import HERE
from dspex.errors import ExecutionTimeout, QueueTimeout, WorkerCrashed
from dspex.pool import Pool

SIZE = 2
ALLOWED = (
    asyncio.CancelledError,
    concurrent.futures.CancelledError,
    WorkerCrashed,
    ExecutionTimeout,
    QueueTimeout,
)


class PoolMachine(RuleBasedStateMachine):
    OPTIONS: dict[str, Any] = {}  # noqa: RUF012 (read-only, per machine)

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.pool = Pool(
            target="handlers:make",
            size=SIZE,
            pythonpath=(HERE,),
            request_timeout=10.0,
            queue_timeout=8.0,
            cancel_grace=0.3,
            kill_grace=0.3,
            max_restarts=1000,
            **self.OPTIONS,
        )
        self.pool.start_sync()
        self.calls: list[tuple[str, concurrent.futures.Future[Any]]] = []

    def submit(self, method: str, *args: Any, **kwargs: Any) -> None:
        fut = asyncio.run_coroutine_threadsafe(self.pool.call(method, *args, **kwargs), self.loop)
        self.calls.append((method, fut))

    @rule(seconds=st.sampled_from([0.0, 0.05, 0.2]))
    def call(self, seconds: float) -> None:
        self.submit("sleep", seconds)

    @rule()
    def idempotent_call(self) -> None:
        self.submit("sleep", 0.1, idempotent=True)

    @rule()
    def timeout_call(self) -> None:
        self.submit("spin", timeout=0.3)

    @rule(data=st.data())
    def kill_worker(self, data: st.DataObject) -> None:
        pids = self.pool.stats()["pids"]
        if pids:
            try:
                os.kill(data.draw(st.sampled_from(sorted(pids))), signal.SIGKILL)
            except ProcessLookupError:
                pass

    @precondition(lambda self: any(not f.done() for _, f in self.calls))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        pending = [f for _, f in self.calls if not f.done()]
        data.draw(st.sampled_from(pending)).cancel()

    @invariant()
    def leases_have_owners(self) -> None:
        def check() -> None:
            workers = list(self.pool._workers.values())
            live = [w for w in workers if w.state in ("starting", "idle", "busy")]
            assert len(live) <= SIZE, [w.state for w in workers]
            assert len(self.pool._idle) == sum(w.state == "idle" for w in workers)
            for w in workers:
                if w.state == "busy":
                    assert w.req is not None
                    assert not w.req.done or w.cancel_timer is not None, "lease without owner"
                else:
                    assert w not in self.pool._idle or w.state == "idle"
                if w.state in ("idle", "starting"):
                    assert not w.backlog, "calls pipelined behind no running call"
                for req in w.backlog:
                    assert req.state == "pipelined" and req.worker is w

        self.pool._run_on_loop(check)

    def teardown(self) -> None:
        try:
            for method, fut in self.calls:
                try:
                    fut.result(timeout=15)  # no call waits forever
                except ALLOWED:
                    pass
                except Exception as exc:
                    raise AssertionError(f"{method}: unexpected {exc!r}") from exc
                assert fut.done()
            end = self.loop.time() + 10
            while self.loop.time() < end:
                stats = self.pool.stats()
                if stats["idle"] == SIZE and stats["workers"] == SIZE:
                    break
                threading.Event().wait(0.02)
            stats = self.pool.stats()
            assert stats["idle"] + stats["busy"] + stats["starting"] == SIZE, stats
            assert stats["queued"] == 0
        finally:
            self.pool.close_sync(cancel=True)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join()
            self.loop.close()


PoolMachine.TestCase.settings = settings(
    max_examples=8,
    stateful_step_count=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestPoolMachine = PoolMachine.TestCase


class PipelinedPoolMachine(PoolMachine):
    """The same rules with every call pipelined behind a running one when there is room."""

    OPTIONS = {"pipeline": 2, "pipeline_below": 1e9}  # noqa: RUF012

    def __init__(self) -> None:
        super().__init__()
        # a method is pipelined behind only once its cost is known: learn "sleep"'s now
        asyncio.run_coroutine_threadsafe(self.pool.call("sleep", 0.0), self.loop).result()

    @rule(seconds=st.sampled_from([0.0, 0.05]), n=st.integers(2, 6))
    def burst(self, seconds: float, n: int) -> None:
        for _ in range(n):  # more calls than workers at once: some wait in a worker's socket
            self.submit("sleep", seconds)


PipelinedPoolMachine.TestCase.settings = PoolMachine.TestCase.settings
TestPipelinedPoolMachine = PipelinedPoolMachine.TestCase
