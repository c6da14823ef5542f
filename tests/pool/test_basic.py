"""Calls, errors, payloads, sync/async/thread use, telemetry and stats on real workers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import msgpack
import pytest

from dspex import telemetry
from dspex._sync import run_sync
from dspex.errors import CallError, PoolClosed, RemoteError
from dspex.pool import Pool


async def test_call_sync_and_async_methods(pool: Pool) -> None:
    assert await pool.call("add", 2, 3) == 5
    assert await pool.call("aadd", 2, b=5) == 7
    assert await pool.call("asleep", 0.01) == "slept"
    assert pool.call_sync("add", 1, 1) == 2


async def test_remote_exception_is_remote_error_with_traceback(pool: Pool) -> None:
    with pytest.raises(RemoteError) as info:
        await pool.call("fail", "boom")
    err = info.value
    assert err.remote_type == "ValueError"
    assert "boom" in str(err)
    assert "def fail" in err.remote_traceback or "raise ValueError" in err.remote_traceback
    assert await pool.call("ping") == "pong"  # the worker survives handler errors


async def test_missing_and_private_methods(pool: Pool) -> None:
    with pytest.raises(RemoteError) as info:
        await pool.call("nope")
    assert info.value.remote_type == "AttributeError"
    with pytest.raises(CallError):
        await pool.call("_private")


async def test_binary_payloads_travel_as_bytes(pool: Pool) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    assert await pool.call("size_of", data) == len(data)
    out = await pool.call("blob", 3 << 20)
    assert isinstance(out, bytes) and len(out) == 3 << 20


async def test_unserializable_argument_is_a_call_error(pool: Pool) -> None:
    with pytest.raises(CallError, match="codec"):
        await pool.call("echo", object())


class Point:
    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y


class PointCodec:
    @staticmethod
    def default(obj: Any) -> Any:
        if isinstance(obj, Point):
            return msgpack.ExtType(7, msgpack.packb([obj.x, obj.y]))
        raise TypeError(f"cannot encode {obj!r}")

    @staticmethod
    def ext_hook(code: int, data: bytes) -> Any:
        if code == 7:
            return Point(*msgpack.unpackb(data))
        return msgpack.ExtType(code, data)


codec = PointCodec()


async def test_codec_extension_types_cross_both_ways(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(size=1, codec="test_basic:codec")
    out = await pool.call("echo", Point(3, 4))
    assert isinstance(out, Point) and (out.x, out.y) == (3, 4)


async def test_many_threads_and_loops_share_one_pool(pool: Pool) -> None:
    results: list[int] = []
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            results.append(pool.call_sync("add", i, 1))
            results.append(run_sync(pool.call("add", i, 2)))  # the thread's own loop
            results.append(asyncio.run(pool.call("add", i, 3)))  # a fresh loop
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        await asyncio.to_thread(t.join)
    assert not errors
    assert sorted(results) == sorted(i + k for i in range(8) for k in (1, 2, 3))


async def test_concurrent_calls_use_all_workers(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(size=3)
    await pool.start()
    pids = await asyncio.gather(*(pool.call("pid") for _ in range(30)))
    assert len(set(pids)) >= 2
    results = await asyncio.gather(*(pool.call("sleep", 0.2) for _ in range(3)))
    assert results == [0.2] * 3


async def test_lazy_start_and_closed_pool(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(size=1)
    assert pool.state == "new"
    assert pool.stats()["workers"] == 0
    assert await pool.call("ping") == "pong"
    assert pool.state == "running"
    await pool.close()
    assert pool.state == "closed"
    with pytest.raises(PoolClosed):
        await pool.call("ping")


async def test_close_lets_inflight_calls_finish(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(size=1)
    await pool.start()
    task = asyncio.create_task(pool.call("sleep", 0.3))
    await asyncio.sleep(0.1)
    await pool.close()
    assert await task == 0.3


async def test_close_with_cancel_fails_inflight_calls(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool(size=1)
    await pool.start()
    task = asyncio.create_task(pool.call("sleep", 30))
    await asyncio.sleep(0.2)
    await pool.close(cancel=True)
    with pytest.raises(PoolClosed):
        await task


async def test_telemetry_events_and_stats(make_pool: Callable[..., Pool]) -> None:
    with telemetry.capture("dspex.pool") as cap:
        pool = make_pool(size=1)
        await pool.start()
        await pool.call("ping")
        with pytest.raises(RemoteError):
            await pool.call("fail", "x")
        await pool.close()
    names = set(cap.names())
    for event in (
        "dspex.pool.worker.start",
        "dspex.pool.worker.ready",
        "dspex.pool.checkout",
        "dspex.pool.checkin",
        "dspex.pool.call.start",
        "dspex.pool.call.stop",
        "dspex.pool.call.exception",
        "dspex.pool.worker.exit",
    ):
        assert event in names, event
    stop = cap.named("dspex.pool.call.stop")[0]
    assert stop[1]["duration"] > 0
    stats = pool.stats()
    assert stats["calls"] == 2 and stats["failures"] == 1
    assert stats["p50_ms"] is not None


async def test_worker_context_has_deadline_and_method(pool: Pool) -> None:
    ctx = await pool.call("context", timeout=5.0)
    assert ctx["method"] == "context"
    assert ctx["session"] is None
    assert 0 < ctx["remaining"] <= 5.0


async def test_sync_pool_context_manager(make_pool: Callable[..., Pool]) -> None:
    def run() -> int:
        with make_pool(size=1) as pool:
            return int(pool.call_sync("add", 20, 22))

    assert await asyncio.to_thread(run) == 42


def test_pool_implements_the_backend_protocol() -> None:
    from dspex.pool import PoolBackend, SessionBackend

    pool = Pool(target="handlers:make")
    assert isinstance(pool, PoolBackend)
    assert isinstance(pool.session(), SessionBackend)
    pool.close_sync()


def test_import_is_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys, dspex.pool, dspex.pool.worker; "
        "print(sorted(m for m in ('psutil', 'pydantic', 'dspy', 'dspex.pool.pool') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
