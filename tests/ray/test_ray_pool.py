"""The Ray pool backend on a real local Ray cluster (slow: starting Ray takes ~30 s here)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import dspex
from dspex.errors import (
    ConfigurationError,
    ExecutionTimeout,
    PoolSaturated,
    PoolUnhealthy,
    RemoteError,
    ResourceLimitExceeded,
    SessionLost,
    WorkerCrashed,
)
from dspex.pool.config import PoolConfig

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow

HANDLERS = str(Path(__file__).resolve().parents[1] / "pool")


@pytest.fixture(scope="module", autouse=True)
def cluster(ray_cluster: Any) -> Iterator[None]:
    """The session's local cluster (tests/ray/conftest.py)."""
    yield


def _pool(size: int = 2, **options: Any) -> Any:
    from dspex.pool.ray_backend import RayPool

    spec = {"target": "handlers:make", "size": size, "pythonpath": [HANDLERS], "backend": "ray"}
    return RayPool(PoolConfig.from_mapping({**spec, **options}), name="ray-test")


async def test_calls_streams_and_errors() -> None:
    pool = _pool()
    try:
        await pool.start()
        assert await pool.call("add", 2, 3) == 5
        assert await pool.call("aadd", 2, 3) == 5
        assert pool.call_sync("echo", {"a": [1, 2]}) == {"a": [1, 2]}
        assert [x async for x in pool.stream("numbers", 5)] == [0, 1, 2, 3, 4]
        assert [x async for x in pool.stream("anumbers", 3)] == [0, 1, 2]
        with pytest.raises(RemoteError) as info:
            await pool.call("fail", "bad thing")
        assert info.value.remote_type == "ValueError" and "bad thing" in str(info.value)
        context = await pool.call("context")
        assert context["session"] is None and context["method"] == "context"
        stats = pool.stats()
        assert stats["backend"] == "ray" and stats["workers"] == 2 and stats["calls"] >= 4
        assert len(set(stats["pids"])) == 2
    finally:
        await pool.close()


async def test_parent_callbacks_sync_and_async() -> None:
    pool = _pool(size=1)
    pool.register_callback("double", lambda x: x * 2)

    async def atriple(x: int) -> int:
        await asyncio.sleep(0)
        return x * 3

    try:
        assert await pool.call("ask_parent", "double", 21) == 42
        with pool.session() as session:
            session.register_callback("triple", atriple)
            assert await session.call("aask_parent", "triple", 5) == 15
            with pytest.raises(RemoteError, match="no parent callback"):
                await session.call("ask_parent", "missing", 1)
    finally:
        await pool.close()


async def test_sessions_pin_state_to_one_actor() -> None:
    pool = _pool(size=2)
    try:
        a, b = pool.session(), pool.session()
        await a.call("set", "k", "for-a")
        await b.call("set", "k", "for-b")
        pids = {await a.call("pid") for _ in range(4)}
        assert pids == {a.worker_pid}
        assert await a.call("get", "k") == "for-a" and await b.call("get", "k") == "for-b"
        assert (await a.call("context"))["session"] == a.id
        a.close()
        b.close()
    finally:
        await pool.close()


async def test_deadline_kills_and_replaces_the_actor() -> None:
    pool = _pool(size=1)
    try:
        first = await pool.call("pid")
        with pytest.raises(ExecutionTimeout):
            await pool.call("sleep", 30, timeout=0.5)
        assert await pool.call("pid") != first
        assert pool.stats()["restarts"] == 1
    finally:
        await pool.close()


async def test_actor_death_mid_session_rehydrates_or_is_lost() -> None:
    pool = _pool(size=1)
    rebuilt: list[str] = []

    async def recipe(session: Any) -> None:
        rebuilt.append(session.id)
        await session.call("set", "k", "rebuilt")

    try:
        with_recipe = pool.session(recipe=recipe)
        await with_recipe.call("set", "k", "original")
        without = pool.session()
        await without.call("set", "k", "v")
        before = with_recipe.worker_pid
        with pytest.raises(WorkerCrashed):
            await with_recipe.call("die", int(signal.SIGKILL))
        assert await with_recipe.call("get", "k") == "rebuilt"
        assert rebuilt == [with_recipe.id] and with_recipe.worker_pid != before
        with pytest.raises(SessionLost):
            await without.call("get", "k")
        with pytest.raises(WorkerCrashed):
            await pool.call("die", int(signal.SIGKILL))
        assert await pool.call("ping") == "pong"
    finally:
        await pool.close()


async def test_a_broken_factory_makes_the_pool_unhealthy() -> None:
    pool = _pool(size=1, target="handlers:broken")
    with pytest.raises(PoolUnhealthy, match="factory exploded"):
        await pool.start()
    await pool.close()


def test_configured_by_settings_and_validated() -> None:
    from dspex.pool import shutdown_pools
    from dspex.pool.ray_backend import RayPool
    from dspex.pool.registry import get_pool

    with pytest.raises(ConfigurationError, match="backend"):
        PoolConfig.from_mapping({"target": "handlers:make", "backend": "spark"})
    spec = {"target": "handlers:make", "size": 1, "backend": "ray", "pythonpath": [HANDLERS]}
    dspex.configure(pools={"r": spec})
    try:
        pool = get_pool("r")
        assert isinstance(pool, RayPool)
        assert pool.call_sync("add", 1, 1) == 2
    finally:
        shutdown_pools()


def test_dspy_modules_run_on_ray_actors(tmp_path: Path) -> None:
    """The DSPy worker host, unchanged, in a Ray actor: a routed dspy.Predict call."""
    pytest.importorskip("dspy")
    from dspex.pool import shutdown_pools
    from dspex.testing import LMServer

    with LMServer() as server:
        dspex.configure(
            lm=dspex.LM("openai/t", api_base=server.url, api_key="k", cache=False),
            pools={"dspy": {"backend": "ray", "size": 1, "startup_timeout": 120}},
        )
        try:
            predict = dspex.Predict("question -> answer", implementation="dspy")
            assert predict.implementation == "dspy"
            pred = predict(question="Which actor answered?")
            assert pred.answer
            assert len(server.requests) == 1
        finally:
            shutdown_pools()


# ---------------------------------------------------------------------------- limits/recycling

HERE = str(Path(__file__).resolve().parent)


def _hog_pool(**options: Any) -> Any:
    from dspex.pool.ray_backend import RayPool

    spec = {"target": "ray_handlers:make", "size": 1, "pythonpath": [HERE], "backend": "ray"}
    return RayPool(PoolConfig.from_mapping({**spec, **options}), name="ray-limits")


async def test_max_requests_recycles_but_a_recipe_less_session_keeps_its_actor() -> None:
    pool = _pool(size=1, max_requests=2)
    try:
        first = await pool.call("pid")
        assert await pool.call("pid") == first  # the 2nd call: then it is due
        assert await pool.call("pid") != first
        stats = pool.stats()
        assert stats["recycles"] == {"max_requests": 1} and stats["restarts"] == 0
        with pool.session() as pinned:
            pids = {await pinned.call("pid") for _ in range(4)}
            assert len(pids) == 1  # no recipe: recycling waits for the session to close
        assert await pool.call("pid") not in pids

        rebuilt: list[str] = []

        async def recipe(session: Any) -> None:
            rebuilt.append(session.id)

        with pool.session(recipe=recipe) as s:
            seen = {await s.call("pid") for _ in range(2)}
        assert len(seen) == 2 and rebuilt == [s.id]  # recycled under it, rebuilt by recipe
    finally:
        await pool.close()


async def test_rss_recycle_ttl_and_memory_cap() -> None:
    pool = _hog_pool(recycle_rss_mb=1.0)  # every actor is over 1 MB after its first call
    try:
        a = await pool.call("pid")
        assert await pool.call("pid") != a
        assert pool.stats()["recycles"]["rss"] >= 1
    finally:
        await pool.close()
    pool = _hog_pool(ttl=0.2)
    try:
        a = await pool.call("pid")
        await asyncio.sleep(0.3)
        assert await pool.call("pid") != a
        assert pool.stats()["recycles"] == {"ttl": 1}
    finally:
        await pool.close()
    pool = _hog_pool(memory_limit_mb=400, open_files_limit=64)
    try:
        a = await pool.call("pid")
        with pytest.raises(ResourceLimitExceeded) as info:
            await pool.call("hold", 600, 5.0)
        assert info.value.fields["resource"] == "memory"
        assert await pool.call("pid") != a
        with pytest.raises(RemoteError, match="Too many open files"):
            await pool.call("open_files", 200)
    finally:
        await pool.close()


async def test_max_sessions_and_unsupported_options_are_said(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool = _pool(size=1, max_sessions=1, cpu_limit_s=5)
    assert "cpu_limit_s" in caplog.text
    try:
        with pool.session(), pytest.raises(PoolSaturated):
            pool.session()
        pool.session().close()
    finally:
        await pool.close()
