"""What a worker's loss means for the call it was running: run it again elsewhere (it never
ran, or it is idempotent), or end it with the one typed error that says why (``WorkerCrashed``,
``SessionLost``, ``ResourceLimitExceeded``, ``PoolClosed``).
"""

from __future__ import annotations

import signal

from dspex import telemetry
from dspex.errors import PoolClosed, ResourceLimitExceeded, SessionLost, WorkerCrashed
from dspex.pool._procs import ExitInfo
from dspex.pool.core import PoolCore
from dspex.pool.records import Req, Worker

__all__ = ["Outcomes"]


class Outcomes(PoolCore):
    """Mixin: the outcome of a call whose worker died under it."""

    def _requeue_or_fail(self, w: Worker, req: Req, info: ExitInfo) -> None:
        if req.done:
            return
        if req.undelivered and req.session is None and self._state == "running":
            # never started by a worker (its write failed, or it was pipelined behind the
            # call that ended the worker): run it elsewhere, whatever it is
            req.undelivered = False
            req.worker = None
            self._enqueue(req, self._now(), front=True)
            return
        if w.limit_hit is not None and not req.undelivered:
            self._fail(req, self._limit_error(w, w.limit_hit[0], None))
            return
        if info.signal == signal.SIGXCPU and not req.undelivered:
            w.limit_hit = ("cpu", float(self.config.cpu_limit_s or 0))
            self._fail(req, self._limit_error(w, "cpu", None))
            return
        if w.exit_reason in ("shutdown",) and self._state in ("closing", "closed"):
            self._fail(
                req, PoolClosed(f"pool {self.name!r} closed during the call", pool=self.name)
            )
            return
        retryable = req.idempotent and req.attempts == 0 and req.items_sent == 0
        retryable = retryable or req.undelivered
        if retryable and req.session is None and self._state == "running":
            req.attempts += 1
            self._counts["retries"] += 1
            if telemetry.has_handlers():
                telemetry.emit(
                    "dspex.pool.call.retry",
                    {},
                    {"pool": self.name, "method": req.method, "pid": w.pid},
                )
            req.worker = None
            self._enqueue(req, self._now(), front=True)
            return
        if retryable and req.session is not None:
            sess = req.session
            self._fail(
                req,
                SessionLost(
                    f"session {sess.id} lost its worker {w.pid} ({info.describe()}) during {req.method}",
                    pool=self.name,
                    session=sess.id,
                    retryable=True,
                ),
            )
            return
        self._fail(
            req,
            WorkerCrashed(
                f"worker {w.pid} of pool {self.name!r} died ({info.describe()}) during {req.method}",
                pool=self.name,
                pid=w.pid,
                signal=info.signal,
                exitcode=info.exitcode,
            ),
        )

    def _limit_error(self, w: Worker, resource: str, detail: str | None) -> ResourceLimitExceeded:
        c = self.config
        limit = {
            "memory": c.memory_limit_mb,
            "cpu": c.cpu_limit_s,
            "files": c.open_files_limit,
        }.get(resource)
        text = f"worker {w.pid} exceeded its {resource} limit ({limit}) and was replaced"
        if detail:
            text += f": {detail}"
        return ResourceLimitExceeded(
            text, pool=self.name, pid=w.pid, resource=resource, limit=limit
        )
