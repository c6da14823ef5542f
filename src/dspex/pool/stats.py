"""``Pool.stats()``: a point-in-time snapshot of a pool's workers, queue and call latencies."""

from __future__ import annotations

import collections
import statistics
from typing import Any

from dspex.pool.core import PoolCore

__all__ = ["snapshot"]


def snapshot(pool: PoolCore) -> dict[str, Any]:
    """Worker counts by state, queue, sessions, restarts, latency percentiles."""
    workers = list(pool._workers.values())
    by_state = collections.Counter(w.state for w in workers)
    lat = sorted(pool._latencies)
    counts = pool._counts
    with pool._direct_lock:  # calls sync callers ran on their own: the count's next value,
        direct = next(pool._direct_calls) - pool._stat_reads  # minus our own earlier reads
        pool._stat_reads += 1
    return {
        "name": pool.name,
        "target": pool.config.target,
        "state": pool._state,
        "size": pool.config.size,
        "workers": by_state["idle"] + by_state["busy"] + by_state["starting"],
        "idle": by_state["idle"],
        "busy": by_state["busy"],
        "starting": by_state["starting"],
        "stopping": by_state["stopping"],
        "queued": len(pool._queue),
        "sessions": len(pool._sessions),
        "restarts": counts["restarts"],
        "recycles": counts["recycles"],
        "crashes": counts["crashes"],
        "calls": counts["calls"] + direct,
        "failures": counts["failures"],
        "retries": counts["retries"],
        "pipelined": counts["pipelined"],
        "p50_ms": statistics.median(lat) * 1e3 if lat else None,
        "p99_ms": lat[max(0, int(len(lat) * 0.99) - 1)] * 1e3 if lat else None,
        "last_error": pool._last_error,
        "pids": [w.pid for w in workers if w.state in ("idle", "busy") and w.pid],
    }
