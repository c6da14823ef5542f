"""Sessions (affinity modes, loss, rehydration, TTL, caps, callbacks) and streams."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable

import pytest

from dspex.errors import (
    ConfigurationError,
    PoolSaturated,
    RemoteError,
    SessionLost,
    WorkerCrashed,
)
from dspex.pool import Pool, Session


async def test_session_pins_state_to_one_worker(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(size=3)
    await pool.start()
    async with pool.session() as s:
        await s.call("set", "k", 41)
        pids = {await s.call("pid") for _ in range(10)}
        assert len(pids) == 1 and s.worker_pid in pids
        assert await s.call("get", "k") == 41
        ctx = await s.call("context")
        assert ctx["session"] == s.id
    assert pool.stats()["sessions"] == 0


async def test_session_state_is_dropped_on_close(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(size=1)
    async with pool.session() as s:
        await s.call("set", "k", 1)
        sid = s.id
    assert await pool.call("echo", sid) == sid
    async with pool.session() as s2:
        assert await s2.call("get", "k") is None


async def test_strict_fail_fast_refuses_when_its_worker_is_busy(
    make_pool: Callable[..., Pool],
) -> None:
    pool = make_pool(size=2)
    await pool.start()
    async with pool.session(mode="strict_fail_fast") as s:
        await s.call("ping")
        slow = asyncio.create_task(s.call("sleep", 0.4))
        await asyncio.sleep(0.1)
        with pytest.raises(PoolSaturated, match="busy"):
            await s.call("ping")
        await slow


async def test_strict_queue_waits_for_its_worker(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(size=2)
    await pool.start()
    async with pool.session(mode="strict_queue") as s:
        pid = await s.call("pid")
        slow = asyncio.create_task(s.call("sleep", 0.3))
        await asyncio.sleep(0.05)
        assert await s.call("pid") == pid  # waited, although another worker was idle
        await slow


async def test_hint_mode_uses_another_worker_when_busy(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(size=2)
    await pool.start()
    async with pool.session(mode="hint") as s:
        pid = await s.call("pid")
        slow = asyncio.create_task(s.call("sleep", 0.3))
        await asyncio.sleep(0.05)
        assert await s.call("pid") != pid
        await slow
        assert await s.call("pid") == pid  # still pinned


async def test_lost_worker_raises_session_lost_never_fresh_state(
    make_pool: Callable[..., Pool],
) -> None:
    pool = make_pool(size=2)
    await pool.start()
    async with pool.session() as s:
        await s.call("set", "k", 1)
        os.kill(s.worker_pid or 0, signal.SIGKILL)
        await asyncio.sleep(0.3)
        with pytest.raises(SessionLost) as info:
            await s.call("get", "k")
        assert info.value.reason == "worker_lost"
        with pytest.raises(SessionLost):
            await s.call("get", "k")


async def test_crash_during_a_session_call(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(size=2)
    await pool.start()
    async with pool.session() as s:
        await s.call("ping")
        task = asyncio.create_task(s.call("sleep", 10))
        await asyncio.sleep(0.2)
        os.kill(s.worker_pid or 0, signal.SIGKILL)
        with pytest.raises(WorkerCrashed):
            await task
        with pytest.raises(SessionLost):
            await s.call("ping")


async def test_recipe_rehydrates_on_another_worker(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(size=2)
    await pool.start()
    rebuilt: list[int] = []

    async def recipe(session: Session) -> None:
        await session.call("set", "k", 99)
        rebuilt.append(session.worker_pid or 0)

    async with pool.session(mode="strict_queue", recipe=recipe) as s:
        await s.call("set", "k", 99)
        old = s.worker_pid
        os.kill(old or 0, signal.SIGKILL)
        await asyncio.sleep(0.3)
        assert await s.call("get", "k") == 99
        assert rebuilt and rebuilt[0] != old and s.worker_pid == rebuilt[0]
        # an idempotent call in flight when the worker dies is rebuilt and retried too
        task = asyncio.create_task(s.call("sleep", 0.5, idempotent=True))
        await asyncio.sleep(0.1)
        os.kill(s.worker_pid or 0, signal.SIGKILL)
        assert await task == 0.5
        assert len(rebuilt) == 2


async def test_failing_recipe_is_session_lost(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(size=1)

    async def recipe(session: Session) -> None:
        await session.call("fail", "cannot rebuild")

    async with pool.session(recipe=recipe) as s:
        await s.call("ping")
        os.kill(s.worker_pid or 0, signal.SIGKILL)
        await asyncio.sleep(0.3)
        with pytest.raises(SessionLost, match="recipe failed") as info:
            await s.call("ping")
        assert isinstance(info.value.__cause__, RemoteError)


async def test_session_ttl_and_cap(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(size=1, max_sessions=1)
    await pool.start()
    s = pool.session(ttl=0.3).open()
    with pytest.raises(PoolSaturated, match="sessions"):
        pool.session().open()
    await s.call("set", "k", 1)
    await asyncio.sleep(0.8)
    with pytest.raises(SessionLost) as info:
        await s.call("get", "k")
    assert info.value.reason == "expired"
    async with pool.session() as other:  # the expired one freed its slot
        assert await other.call("get", "k") is None
    with pytest.raises(ConfigurationError):
        pool.session(mode="sticky")  # type: ignore[arg-type]


async def test_sessions_prevent_recycling_without_recipe(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(size=1, max_requests=2)
    async with pool.session() as s:
        pids = {await s.call("pid") for _ in range(5)}
        assert len(pids) == 1
    # once the session closes, the overdue worker is recycled
    await asyncio.sleep(0.2)
    assert await pool.call("pid") not in pids


async def test_callbacks_sync_and_async_per_session(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(size=1)
    seen: list[tuple[str, int]] = []

    def metric(x: int) -> int:
        seen.append(("metric", x))
        return x * 10

    async def tool(x: int) -> str:
        await asyncio.sleep(0)
        return f"tool:{x}"

    pool.register_callback("global", lambda: "pool-wide")
    async with pool.session() as s:
        s.register_callback("metric", metric)
        s.register_callback("tool", tool)
        assert await s.call("ask_parent", "metric", 4) == 40
        assert await s.call("ask_parent", "tool", 5) == "tool:5"
        assert await s.call("aask_parent", "tool", 6) == "tool:6"
        assert await s.call("ask_parent", "global") == "pool-wide"
        with pytest.raises(RemoteError, match="no parent callback"):
            await s.call("ask_parent", "missing")
    assert seen == [("metric", 4)]
    with pytest.raises(RemoteError, match="no parent callback"):
        await pool.call("ask_parent", "metric", 1)  # session callbacks stay in their session


async def test_session_call_sync(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(size=2)

    def run() -> int:
        with pool.session(mode="strict_queue") as s:
            s.call_sync("set", "k", 5)
            return int(s.call_sync("get", "k"))

    assert await asyncio.to_thread(run) == 5


# ---------------------------------------------------------------------------- streams


async def test_stream_sync_and_async_generators(pool: Pool) -> None:
    assert [x async for x in pool.stream("numbers", 50)] == list(range(50))
    assert [x async for x in pool.stream("anumbers", 20, window=3)] == list(range(20))
    assert [x async for x in pool.stream("numbers", 0)] == []


async def test_stream_backpressure_bounds_what_the_worker_produces(
    make_pool: Callable[..., Pool],
) -> None:
    pool = make_pool(size=1)
    await pool.start()
    stream = pool.stream("endless", window=4)
    async with stream:
        got = [await stream.__anext__() for _ in range(3)]
        await asyncio.sleep(0.3)  # the consumer stalls: the worker must wait, not run ahead
        assert len(stream._items) <= 4
        got.append(await stream.__anext__())
    assert got == [0, 1, 2, 3]
    # early close cancelled the generator: the worker is free again
    assert await pool.call("ping", timeout=5) == "pong"


async def test_stream_errors_and_non_generators(pool: Pool) -> None:
    with pytest.raises(RemoteError, match="not a generator"):
        [x async for x in pool.stream("ping")]
    with pytest.raises(RemoteError, match=r"pool\.stream"):
        await pool.call("numbers", 3)


async def test_stream_consumer_cancelled(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(size=1, cancel_grace=5)
    await pool.start()
    pid = await pool.call("pid")

    async def consume() -> None:
        async for _ in pool.stream("endless", window=2):
            await asyncio.sleep(0.01)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    start = time.monotonic()
    assert await pool.call("pid") == pid  # stopped cooperatively, not killed
    assert time.monotonic() - start < 2


async def test_stream_in_a_session(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(size=2)
    async with pool.session() as s:
        pid = await s.call("pid")
        assert [x async for x in s.stream("numbers", 3)] == [0, 1, 2]
        assert await s.call("pid") == pid
