"""Deadlines on the pool thread: one timer for every call, not one per call.

A call has up to two limits: how long it may wait (``queue_timeout`` or its deadline, while
queued in the parent or pipelined behind a worker's running call) and how long it may run (its
deadline). Instead of a timer per call (created and cancelled on every call: a good share of
the pool thread's work under load), the pool keeps one timer set at the earliest limit any
call may reach; when it fires, :meth:`Deadlines._on_watch` ends every call past its limit and
sets the timer again for the next. A limit that ended with its call leaves the timer early,
which then finds nothing due: cheap, and rare (limits are seconds apart, calls milliseconds).
"""

from __future__ import annotations

import asyncio
import math

from dspex.pool.core import PoolCore

__all__ = ["Deadlines"]


class Deadlines(PoolCore):
    """Mixin: the single timer behind every queue and execution limit."""

    _watch_handle: asyncio.TimerHandle | None = None
    _watch_when: float = math.inf

    def _watch(self, when: float) -> None:
        """Make sure the timer fires by ``when`` (a call's limit)."""
        if when >= self._watch_when:
            return
        if self._watch_handle is not None:
            self._watch_handle.cancel()
        assert self._loop is not None
        self._watch_when = when
        self._watch_handle = self._loop.call_at(when, self._on_watch)

    def _on_watch(self) -> None:
        """End every call past its limit; set the timer for the earliest one left."""
        self._watch_handle = None
        self._watch_when = math.inf
        now = self._now()
        nxt = math.inf
        for req in list(self._queue):
            limit = req.queue_deadline
            if limit is None or req.state != "queued":
                continue
            if limit <= now:
                self._queue_expired(req)
            elif limit < nxt:
                nxt = limit
        for w in list(self._workers.values()):
            head = w.req  # (a worker leased to a sync caller: that caller watches its call)
            if head is not None and not w.leased and head.state == "running" and head.deadline:
                if head.deadline <= now:
                    self._deadline_passed(head)
                elif head.deadline < nxt:
                    nxt = head.deadline
            for req in list(w.backlog):
                limit = req.queue_deadline
                if limit is None or req.state != "pipelined" or req.done:
                    continue
                if limit <= now:
                    self._pipeline_expired(req)
                elif limit < nxt:
                    nxt = limit
        if nxt < math.inf and self._state != "closed":
            self._watch(nxt)

    def _unwatch(self) -> None:
        if self._watch_handle is not None:
            self._watch_handle.cancel()
            self._watch_handle = None
        self._watch_when = math.inf
