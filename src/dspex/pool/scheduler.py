"""Worker selection: the one rule deciding which idle worker (if any) serves a request.

Used both when a call arrives and when queued calls are pumped, so the affinity rules
(see :mod:`dspex.pool.session`) are written once.
"""

from __future__ import annotations

from dspex.errors import DSPexError, PoolSaturated
from dspex.pool.records import Req, Worker

__all__ = ["pick_idle", "pick_pipelined", "pick_worker"]


def pick_idle(idle: dict[Worker, None]) -> Worker:
    """The most recently used idle worker that holds no session (warm caches, few pins)."""
    for w in reversed(idle):
        if not w.sessions:
            return w
    return next(reversed(idle))


def pick_worker(req: Req, idle: dict[Worker, None], pool: str) -> Worker | DSPexError | None:
    """The worker ``req`` should run on now, an error that ends it, or None (it must wait).

    No session: any idle worker. A session with no worker yet: any idle worker (it becomes
    the session's). A pinned session: its worker if idle; else ``strict_fail_fast`` fails,
    ``hint`` takes any idle worker, ``strict_queue`` waits. A lost or closed session fails.
    """
    sess = req.session
    if sess is None:
        return pick_idle(idle) if idle else None
    if sess.closed or sess.lost:
        return sess.lost_error(pool)
    pinned = sess.worker
    if pinned is None:
        return pick_idle(idle) if idle else None
    if pinned.state == "idle" and not pinned.leased:  # (a leased one is a sync caller's)
        return pinned
    if sess.mode == "strict_fail_fast":
        return PoolSaturated(
            f"session {sess.id}'s worker is busy (mode strict_fail_fast)", pool=pool
        )
    if sess.mode == "hint" and idle:
        return pick_idle(idle)
    return None


def pick_pipelined(
    req: Req, busy: list[Worker], depth: int, cost: dict[str, float], now: float, short: float
) -> Worker | None:
    """A busy worker ``req`` may be queued behind in its socket (pipelining), or None.

    Only plain calls (no session, no stream), on workers holding no session, behind a running
    call that is itself plain and not cancelled, when every call ahead of it there is short:
    its method's recent run time (``cost``) is below ``short`` and the running one has run for
    less than ``short`` (so the wait behind them stays short). The emptiest backlog wins.
    The caller's ``busy`` list leaves out workers that must take no more work (leased to a
    sync caller, dying, over a limit, due for recycling).
    """
    if depth <= 0 or req.session is not None or req.stream:
        return None
    best: Worker | None = None
    for w in busy:
        head = w.req
        n = len(w.backlog)
        if head is None or n >= depth or w.sessions or head.stream or head.done:
            continue
        if head.session is not None or now - head.started >= short:
            continue
        if cost.get(head.method, short) >= short:
            continue
        if n and any(cost.get(r.method, short) >= short for r in w.backlog):
            continue
        if best is None or n < len(best.backlog):
            best = w
            if n == 0:
                break
    return best
