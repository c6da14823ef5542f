"""Default-suite smoke test of the Ray pool backend on a real local cluster (not slow-marked:
``make test`` runs it; the full Ray suite is ``test_ray_pool.py``, ``-m slow``)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from dspex.errors import RemoteError, WorkerCrashed
from dspex.pool.config import PoolConfig

pytestmark = pytest.mark.timeout(300)

HANDLERS = str(Path(__file__).resolve().parents[1] / "pool")


async def test_a_ray_pool_calls_streams_and_survives_an_actor_death(ray_cluster: Any) -> None:
    from dspex.pool.ray_backend import RayPool

    spec = {"target": "handlers:make", "size": 1, "pythonpath": [HANDLERS], "backend": "ray"}
    pool = RayPool(PoolConfig.from_mapping(spec), name="ray-smoke")
    try:
        assert await pool.call("add", 2, 3) == 5
        assert [x async for x in pool.stream("numbers", 3)] == [0, 1, 2]
        with pytest.raises(RemoteError, match="bad thing"):
            await pool.call("fail", "bad thing")
        first = await pool.call("pid")
        with pytest.raises(WorkerCrashed):
            await pool.call("die", int(signal.SIGKILL))
        assert await pool.call("pid") != first
        assert pool.stats()["restarts"] == 1
    finally:
        await pool.close()
