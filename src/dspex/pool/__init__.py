"""Supervised worker-process pools (``dspex.pool``).

A pool runs a handler object in each of N long-lived worker processes and routes calls to
them: readiness-gated start, fork-server template for fast restarts, crash restarts with
intensity limits, recycling (requests, TTL, the worker's own RSS), resource limits, deadlines
that kill, cancellation, streaming with backpressure, worker-to-parent callbacks, sessions
with affinity and rehydration, bounded queues, typed errors, telemetry and stats::

    from dspex.pool import Pool

    async with Pool(target="mypkg.handlers:make", size=4) as pool:
        print(await pool.call("add", 1, 2))

Nothing here is imported until used: workers import only :mod:`dspex.pool.worker` and
:mod:`dspex.pool.protocol` (stdlib + msgpack).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dspex._lazy import lazy_getattr

if TYPE_CHECKING:
    from dspex.pool.base import PoolBackend, SessionBackend
    from dspex.pool.config import PoolConfig
    from dspex.pool.pool import DEFAULT, Pool
    from dspex.pool.registry import configured_pools, get_pool, running_pools, shutdown_pools
    from dspex.pool.session import PoolStream, Session
    from dspex.pool.worker import CallCancelled, CallContext, current_call

__all__ = [
    "DEFAULT",
    "CallCancelled",
    "CallContext",
    "Pool",
    "PoolBackend",
    "PoolConfig",
    "PoolStream",
    "Session",
    "SessionBackend",
    "configured_pools",
    "current_call",
    "get_pool",
    "running_pools",
    "shutdown_pools",
]

__getattr__ = lazy_getattr(
    __name__,
    {
        "DEFAULT": "dspex.pool.pool",
        "CallCancelled": "dspex.pool.worker",
        "CallContext": "dspex.pool.worker",
        "Pool": "dspex.pool.pool",
        "PoolBackend": "dspex.pool.base",
        "PoolConfig": "dspex.pool.config",
        "PoolStream": "dspex.pool.session",
        "Session": "dspex.pool.session",
        "SessionBackend": "dspex.pool.base",
        "configured_pools": "dspex.pool.registry",
        "current_call": "dspex.pool.worker",
        "get_pool": "dspex.pool.registry",
        "running_pools": "dspex.pool.registry",
        "shutdown_pools": "dspex.pool.registry",
    },
    globals(),
)
