"""The state every part of a pool shares, and the few helpers they all use.

:class:`PoolCore` is the base of :class:`~dspex.pool.pool.Pool`; the request path
(:mod:`~dspex.pool.dispatch`) and supervision (:mod:`~dspex.pool.supervisor`) are mixins
over it. Everything here runs on the pool's own thread (:mod:`~dspex.pool.loop`).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dspex import telemetry
from dspex.errors import ConfigurationError, PoolClosed, PoolUnhealthy
from dspex.pool import _procs
from dspex.pool.config import PoolConfig
from dspex.pool.loop import LoopThread
from dspex.pool.protocol import load_codec
from dspex.pool.records import PoolState, Req, Worker

if TYPE_CHECKING:
    from dspex.errors import ProtocolError
    from dspex.pool._procs import ExitInfo
    from dspex.pool.protocol import Message, ParentCall, Ready
    from dspex.pool.session import _SessionState

__all__ = ["PoolCore"]


class PoolCore:
    """Shared state of one pool (workers, idle set, queue, sessions, counters)."""

    def __init__(
        self, config: PoolConfig | None = None, *, name: str = "default", **options: Any
    ) -> None:
        if config is None:
            config = PoolConfig(**options)
        elif options:
            config = config.replace(**options)
        if not isinstance(config, PoolConfig):
            raise ConfigurationError(f"config must be a PoolConfig, got {type(config).__name__}")
        self.name = name
        self.config = config
        self._codec = load_codec(config.codec)
        self._state: PoolState = "new"
        self._last_error: str | None = None
        self._io = LoopThread(name)
        self._spawner: _procs.Spawner | None = None
        self._workers: dict[int, Worker] = {}
        self._idle: dict[Worker, None] = {}
        self._queue: collections.deque[Req] = collections.deque()
        self._sessions: dict[str, _SessionState] = {}
        self._callbacks: dict[str, Callable[..., Any]] = {}
        self._wids = itertools.count(1)
        self._restarts: collections.deque[float] = collections.deque()
        self._init_failures = 0
        self._start_waiters: list[asyncio.Future[None]] = []
        self._tick: asyncio.TimerHandle | None = None
        self._latencies: collections.deque[float] = collections.deque(maxlen=4096)
        self._counts = collections.Counter[str]()
        self._cost: dict[str, float] = {}  # moving average of run time per method (pipelining)
        self._finalizers: set[asyncio.Task[None]] = set()
        self._inbox: collections.deque[Req] = collections.deque()  # calls posted by callers
        self._inbox_armed = False  # a drain of the inbox is scheduled on the pool thread
        self._dirty: list[Worker] = []  # workers holding Call frames to write (dispatch)
        self._flush_armed = False  # a flush of those is scheduled on the pool thread
        self._parked: list[Worker] = []  # idle workers sync callers may take (pool.direct)
        self._parked_pinned: list[Worker] = []  # the same, holding sessions (theirs only)
        self._want_direct = False  # a sync caller found no parked worker: park from now on
        self._direct_lock = threading.Lock()  # counters touched by caller threads
        self._direct_calls = itertools.count()  # one next() per direct call (see stats)
        self._stat_reads = 0  # next() calls stats made on it (under _direct_lock)
        self._ages = config.max_requests is not None or config.ttl is not None

    @property
    def _loop(self) -> asyncio.AbstractEventLoop | None:
        return self._io.loop

    def _now(self) -> float:
        loop = self._io.loop
        assert loop is not None
        return loop.time()

    def _closed_error(self) -> PoolClosed:
        return PoolClosed(f"pool {self.name!r} is closed", pool=self.name)

    def _unhealthy_error(self) -> PoolUnhealthy:
        return PoolUnhealthy(
            f"pool {self.name!r} is unhealthy: {self._last_error}",
            pool=self.name,
            last_error=self._last_error,
        )

    def _fail(self, req: Req, error: BaseException) -> None:
        if req.resolve(False, error):
            self._counts["failures"] += 1
            if telemetry.has_handlers():
                telemetry.emit(
                    "dspex.pool.call.exception",
                    {"duration": self._now() - req.submitted},
                    {
                        "pool": self.name,
                        "method": req.method,
                        "id": req.id,
                        "error": type(error).__name__,
                    },
                )

    def _drain_inbox(self) -> None:
        """Submit every call posted since the last drain (one wake-up for many calls)."""
        self._inbox_armed = False
        inbox = self._inbox
        while inbox:
            self._submit(inbox.popleft())
        self._flush_out()

    def _spawn_task(self, coro: Any) -> None:
        """Run a coroutine on the pool thread, keeping a reference until it ends."""
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._finalizers.add(task)
        task.add_done_callback(self._finalizers.discard)

    if TYPE_CHECKING:  # provided by the mixins (dispatch, supervisor) and the facade

        def _on_message(self, w: Worker, msg: Message) -> None: ...
        def _on_protocol_error(self, w: Worker, exc: ProtocolError) -> None: ...
        def _on_worker_lost(self, w: Worker) -> None: ...
        def _on_ready(self, w: Worker, msg: Ready) -> None: ...
        def _parent_call(self, w: Worker, msg: ParentCall) -> None: ...
        def _begin(self) -> None: ...
        def _pump(self) -> None: ...
        def _watch(self, when: float) -> None: ...
        def _queue_expired(self, req: Req) -> None: ...
        def _pipeline_expired(self, req: Req) -> None: ...
        def _flush_out(self) -> None: ...
        def _finish(self, w: Worker, req: Req) -> None: ...
        def _enqueue(self, req: Req, now: float, *, front: bool) -> None: ...
        def _kill(self, w: Worker, reason: str) -> None: ...
        def _retire(self, w: Worker, reason: str) -> None: ...
        def _recycle_reason(self, w: Worker, ahead: int = 0) -> str | None: ...
        def _may_recycle(self, w: Worker) -> bool: ...
        def _limit_error(self, w: Worker, resource: str, detail: str | None) -> Exception: ...
        def _requeue_or_fail(self, w: Worker, req: Req, info: ExitInfo) -> None: ...
        def _lose_sessions_of(self, w: Worker) -> None: ...
        def _make_idle(self, w: Worker) -> None: ...
        def _park_idle(self) -> None: ...
        def _reclaim(self, w: Worker) -> bool: ...
        def _unpark_one(self) -> bool: ...
        def _checkin(self, w: Worker) -> None: ...
        def _deadline_passed(self, req: Req) -> None: ...
        def _cancel(self, req: Req) -> None: ...
        def _submit(self, req: Req) -> None: ...
        def _close_session(self, sess: _SessionState) -> None: ...
