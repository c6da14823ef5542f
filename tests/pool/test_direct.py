"""The sync fast path (``dspex.pool.direct``): a caller thread talks to a parked worker's
socket itself, and hands anything unusual (callbacks, deaths, deadlines, recycling) to the
pool thread, which finishes the call exactly as if it had dispatched it."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from test_faults import wait_until

from dspex import telemetry
from dspex.errors import ExecutionTimeout, PoolClosed, RemoteError, WorkerCrashed
from dspex.pool import Pool


def wait_for(cond: Callable[[], bool], within: float = 10.0) -> bool:
    end = time.monotonic() + within
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def dead(pid: int) -> bool:
    """The process has exited (it may still await its reaper)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def warm(pool: Pool) -> None:
    """Start the pool and make it park its idle workers for sync callers."""
    pool.start_sync()
    for _ in range(4):
        pool.call_sync("ping")
    assert wait_for(lambda: len(pool._parked) == pool.config.size)


def test_sync_calls_run_on_parked_workers(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(size=2)
    warm(pool)
    before = pool.stats()["calls"]
    assert [pool.call_sync("add", i, 1) for i in range(50)] == [i + 1 for i in range(50)]
    assert pool.stats()["calls"] == before + 50
    assert len(pool._parked) == 2  # every direct call put its worker back
    with pytest.raises(RemoteError, match="ValueError: nope"):
        pool.call_sync("fail", "nope")
    assert pool.call_sync("echo", {"a": [1, b"x"]}) == {"a": [1, b"x"]}


def test_async_calls_take_parked_workers_back(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(size=2)
    warm(pool)

    async def many() -> list[int]:
        return await asyncio.gather(*(pool.call("add", i, 2) for i in range(40)))

    assert asyncio.run(many()) == [i + 2 for i in range(40)]
    assert pool.call_sync("ping") == "pong"
    assert wait_for(lambda: pool.stats()["idle"] == 2)


def test_callback_during_a_direct_call_is_adopted(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(size=1)
    pool.register_callback("double", lambda x: 2 * x)
    warm(pool)
    assert pool.call_sync("ask_parent", "double", 21) == 42
    assert pool.call_sync("ping") == "pong"  # and the worker is usable (and parked) again
    assert wait_for(lambda: len(pool._parked) == 1)


def test_deadline_of_a_direct_call_kills_the_worker(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(size=1, kill_grace=0.2)
    warm(pool)
    pid = pool.stats()["pids"][0]
    with pytest.raises(ExecutionTimeout):
        pool.call_sync("spin", timeout=0.3)
    assert wait_for(lambda: pool.stats()["idle"] == 1 and pid not in pool.stats()["pids"])
    assert pool.call_sync("ping") == "pong"


def test_worker_killed_during_a_direct_call(make_pool: Callable[..., Pool], tmp_path: Path) -> None:
    pool = make_pool(size=2)
    warm(pool)
    assert wait_for(lambda: all(w.state != "busy" for w in pool._workers.values()))
    outcome: list[BaseException | Any] = []
    started = tmp_path / "started"

    def run() -> None:
        try:
            outcome.append(pool.call_sync("sleep_marked", str(started), 5.0))
        except BaseException as exc:
            outcome.append(exc)

    t = threading.Thread(target=run)
    t.start()
    # kill the worker once it runs the call: killed between "busy" and the frame's write, the
    # call was never delivered and rightly runs on the other worker instead
    assert wait_for(started.exists)
    runner = int(started.read_text())
    assert runner == next(w.pid for w in pool._workers.values() if w.state == "busy")
    os.kill(runner, signal.SIGKILL)
    t.join(20)
    assert not t.is_alive()
    assert isinstance(outcome[0], WorkerCrashed), outcome
    assert pool.call_sync("ping") == "pong"


def test_close_with_cancel_during_a_direct_call(make_pool: Callable[..., Pool]) -> None:
    """The pool thread settles a call a sync caller is running directly (PoolClosed) while
    that caller still waits on the worker: the caller gets that one outcome, and returns."""
    pool = make_pool(size=1, kill_grace=0.2)
    warm(pool)
    outcome: list[BaseException | Any] = []

    def run() -> None:
        try:
            outcome.append(pool.call_sync("sleep", 30.0))
        except BaseException as exc:
            outcome.append(exc)

    t = threading.Thread(target=run)
    t.start()
    assert wait_for(lambda: any(w.state == "busy" and w.leased for w in pool._workers.values()))
    pool.close_sync(cancel=True)
    t.join(20)
    assert not t.is_alive()
    assert isinstance(outcome[0], PoolClosed), outcome


def test_parked_worker_killed_between_calls_loses_no_call(
    make_pool: Callable[..., Pool],
) -> None:
    pool = make_pool(size=2)
    warm(pool)
    for _ in range(3):
        pids = pool.stats()["pids"]
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        assert wait_for(lambda p=pids: all(dead(pid) for pid in p))
        for _ in range(5):  # never delivered to a live worker: re-dispatched, not failed
            assert pool.call_sync("ping") == "pong"
        assert wait_for(lambda p=pids: not set(p) & set(pool.stats()["pids"]))


def test_recycling_after_max_requests_with_direct_calls(
    make_pool: Callable[..., Pool],
) -> None:
    pool = make_pool(size=2, max_requests=5)
    warm(pool)
    assert [pool.call_sync("add", i, 0) for i in range(40)] == list(range(40))
    assert pool.stats()["recycles"] >= 5


def test_many_threads_share_the_direct_path(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(size=2)
    warm(pool)
    errors: list[BaseException] = []
    results: list[int] = []
    lock = threading.Lock()

    def worker(k: int) -> None:
        try:
            for i in range(100):
                r = pool.call_sync("add", k, i)
                with lock:
                    results.append(r - k - i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert results == [0] * 600
    assert wait_for(lambda: pool.stats()["idle"] == 2 and pool.stats()["busy"] == 0)


def test_telemetry_handlers_keep_the_classic_path(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(size=1)
    warm(pool)
    with telemetry.capture("dspex.pool.call.stop") as cap:
        pool.call_sync("ping")
    assert len(cap.events) == 1


def test_session_calls_run_directly_on_their_pinned_worker(
    make_pool: Callable[..., Pool],
) -> None:
    pool = make_pool(size=2)
    warm(pool)
    with pool.session(mode="strict_queue") as s:
        s.call_sync("set", "k", 41)
        pid = s.worker_pid
        assert all(s.call_sync("get", "k") == 41 for _ in range(20))
        assert s.call_sync("pid") == pid  # always the session's own worker
        assert wait_for(lambda: any(w.pid == pid for w in pool._parked_pinned))
        # a plain sync caller may take the session's worker; the session still finds its state
        assert [pool.call_sync("add", i, i) for i in range(10)] == [2 * i for i in range(10)]
        assert s.call_sync("get", "k") == 41
    assert wait_for(lambda: pool.stats()["sessions"] == 0)


def test_closing_a_session_drops_its_state_on_a_parked_worker(
    make_pool: Callable[..., Pool],
) -> None:
    pool = make_pool(size=1)
    warm(pool)
    s = pool.session(mode="strict_queue")
    s.call_sync("set", "k", 1)
    assert f"{s.id}:k" in pool.call_sync("keys")
    assert wait_for(lambda: len(pool._parked_pinned) == 1)  # parked, holding the session
    s.close()
    assert wait_for(lambda: f"{s.id}:k" not in pool.call_sync("keys"))


def test_session_worker_killed_between_direct_calls_rehydrates(
    make_pool: Callable[..., Pool],
) -> None:
    pool = make_pool(size=2)
    warm(pool)
    rebuilt: list[int] = []

    async def recipe(session: Any) -> None:
        await session.call("set", "k", 7)
        rebuilt.append(1)

    s = pool.session(mode="strict_queue", recipe=recipe)
    s.call_sync("set", "k", 7)
    pid = s.worker_pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: dead(pid))
    assert s.call_sync("get", "k") == 7  # rebuilt on another worker, then served
    assert rebuilt == [1]
    assert s.worker_pid != pid
    s.close()


def test_plain_sync_callers_leave_a_sessions_worker_alone(
    make_pool: Callable[..., Pool],
) -> None:
    pool = make_pool(size=2)
    warm(pool)
    s = pool.session(mode="strict_fail_fast")  # a busy pinned worker would fail its calls
    s.call_sync("set", "k", 1)
    errors: list[BaseException] = []

    def plain() -> None:
        try:
            for i in range(200):
                assert pool.call_sync("add", i, 1) == i + 1
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=plain)
    t.start()
    got = [s.call_sync("get", "k") for _ in range(200)]
    t.join(60)
    assert not errors
    assert got == [1] * 200
    s.close()


# ---------------------------------------------------------------------- async session calls
# A session's ``await s.call(...)`` takes its parked worker from the caller's event loop (a
# reader on the worker's socket): no pool-thread hop. Whether a call went direct is read on
# the pool thread's own counter, which only calls it dispatched increase.


def _pool_thread_calls(pool: Pool) -> int:
    return int(pool._counts["calls"])


def _pinned_session(pool: Pool, **kwargs: Any) -> Any:
    s = pool.session(mode="strict_queue", **kwargs)
    s.call_sync("set", "k", 41)
    assert wait_for(lambda: s._state.worker in pool._parked_pinned)
    return s


def test_async_session_calls_run_directly(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(size=2)
    warm(pool)
    s = _pinned_session(pool)
    pid = s.worker_pid
    before, seen = _pool_thread_calls(pool), pool.stats()["calls"]

    async def calls() -> list[Any]:
        got = [await s.call("get", "k") for _ in range(30)]
        got.append(await s.call("pid"))
        with pytest.raises(RemoteError, match="ValueError: nope"):
            await s.call("fail", "nope")
        got.append(await s.call("echo", {"a": [1, b"x"]}))
        return got

    assert asyncio.run(calls()) == [41] * 30 + [pid, {"a": [1, b"x"]}]
    assert _pool_thread_calls(pool) == before  # none crossed the pool thread
    assert pool.stats()["calls"] == seen + 33
    assert s._state.worker in pool._parked_pinned  # parked again for the next caller
    s.close()


def test_async_session_call_with_a_callback_is_adopted(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(size=1)
    warm(pool)
    s = _pinned_session(pool)
    s.register_callback("double", lambda x: 2 * x)

    before = _pool_thread_calls(pool)
    assert asyncio.run(s.call("ask_parent", "double", 21)) == 42
    assert _pool_thread_calls(pool) == before  # adopted mid-call, not submitted again
    # the pool thread parks the worker again after the adopted call's reply (not before the
    # caller sees it): once parked, the next call runs directly as well
    assert wait_for(lambda: s._state.worker in pool._parked_pinned)
    assert asyncio.run(s.call("get", "k")) == 41
    assert _pool_thread_calls(pool) == before
    s.close()


def test_cancelling_an_async_direct_call_cancels_it_in_the_worker(
    make_pool: Callable[..., Pool],
) -> None:
    pool = make_pool(size=1)
    warm(pool)
    s = _pinned_session(pool)
    pid = s.worker_pid
    fd = s._state.worker.sock.fileno()

    async def run() -> Any:
        loop = asyncio.get_running_loop()
        task = asyncio.create_task(s.call("cooperative", 30.0))
        w = s._state.worker
        assert await wait_until(lambda: w.state == "busy" and w.leased, 10)
        assert fd in loop._selector.get_map()  # type: ignore[attr-defined]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert fd not in loop._selector.get_map()  # type: ignore[attr-defined]
        return await s.call("get", "k")  # the worker stopped the call and serves the next

    assert asyncio.run(run()) == 41
    assert s.worker_pid == pid  # cancelled cooperatively, not killed
    s.close()


def test_deadline_of_an_async_direct_call(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(size=1, kill_grace=0.2)
    warm(pool)
    s = _pinned_session(pool)

    async def run() -> None:
        with pytest.raises(ExecutionTimeout):
            await s.call("spin", timeout=0.3)

    asyncio.run(run())
    assert pool.call_sync("ping") == "pong"  # a fresh worker took the killed one's place


def test_worker_killed_during_an_async_direct_call(
    make_pool: Callable[..., Pool], tmp_path: Path
) -> None:
    pool = make_pool(size=1)
    warm(pool)
    s = _pinned_session(pool)
    started = tmp_path / "started"

    async def run() -> None:
        task = asyncio.create_task(s.call("sleep_marked", str(started), 30.0))
        assert await wait_until(started.exists, 20)
        os.kill(int(started.read_text()), signal.SIGKILL)
        with pytest.raises(WorkerCrashed):
            await task

    asyncio.run(run())
    assert pool.call_sync("ping") == "pong"
