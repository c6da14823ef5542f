"""``PoolConfig``: everything one worker pool needs, typed, immutable and validated.

A bad value raises :class:`~dspex.errors.ConfigurationError` naming the field, so a typo in
``dspex.configure(pools={...})`` fails at pool creation with a sentence, not deep inside a worker.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from dspex.errors import ConfigurationError

__all__ = ["MemoryLimitKind", "PoolConfig"]

MemoryLimitKind = Literal["rss", "address_space"]


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolConfig:
    """One pool's configuration. Build from a mapping with :meth:`from_mapping`."""

    target: str
    """``"package.module:factory"``; each worker calls ``factory()`` to get its handler."""
    size: int = 2
    """Number of worker processes kept running."""
    python: str | None = None
    """Interpreter for the workers (another virtualenv works: it needs only ``msgpack``)."""
    env: Mapping[str, str] = field(default_factory=dict)
    """Extra environment variables for the workers."""
    cwd: str | None = None
    """Working directory of the workers (default: the parent's)."""
    pythonpath: tuple[str, ...] = ()
    """Extra ``sys.path`` entries for the workers (the dspex sources are always added)."""
    preload: tuple[str, ...] = ()
    """Modules imported once by the fork-server template before workers are forked."""
    fork_server: bool = True
    """Fork workers from a pre-imported template process (fast restarts)."""
    startup_timeout: float = 30.0
    """Seconds a worker may take from spawn to its readiness handshake."""
    startup_batch: int = 8
    """Workers started concurrently."""
    request_timeout: float | None = 60.0
    """Default deadline of a call (queue wait + execution); at the deadline the worker is killed."""
    queue_timeout: float | None = 30.0
    """Longest a call may wait for a free worker."""
    max_queue: int = 1000
    """Calls that may wait for a worker; one more is refused at once with ``PoolSaturated``."""
    max_requests: int | None = None
    """Recycle a worker after this many calls."""
    ttl: float | None = None
    """Recycle a worker after this many seconds of life."""
    recycle_rss_mb: float | None = None
    """Recycle a worker (when idle) whose own resident memory exceeds this."""
    memory_limit_mb: float | None = None
    """Hard memory cap per worker; a call exceeding it fails with ``ResourceLimitExceeded``."""
    memory_limit_kind: MemoryLimitKind = "rss"
    """``"rss"``: the parent watches the worker's resident memory and kills it above the cap.
    ``"address_space"``: ``RLIMIT_AS`` in the worker (allocations fail with ``MemoryError``;
    breaks runtimes that reserve large virtual ranges)."""
    memory_check_interval: float = 0.05
    """Seconds between RSS checks under a hard ``rss`` memory cap. RSS recycling (done when
    idle) is checked every 0.25 s, or this interval if it is longer."""
    cpu_limit_s: int | None = None
    """``RLIMIT_CPU`` of each worker (CPU seconds over its life)."""
    open_files_limit: int | None = None
    """``RLIMIT_NOFILE`` of each worker."""
    max_processes: int | None = None
    """``RLIMIT_NPROC`` of each worker: processes *and threads* its real user may have in all
    (the kernel counts per user, not per worker; not enforced for root)."""
    max_restarts: int = 20
    """Crash restarts allowed within ``restart_window`` before the pool turns unhealthy."""
    restart_window: float = 10.0
    """Seconds over which ``max_restarts`` is counted."""
    max_init_failures: int = 3
    """Consecutive workers failing before readiness that make the pool unhealthy."""
    shutdown_timeout: float = 5.0
    """On close, seconds to let in-flight calls finish before they are cancelled."""
    kill_grace: float = 1.0
    """Seconds between SIGTERM and SIGKILL of a worker's process group on shutdown."""
    cancel_grace: float = 1.0
    """Seconds a worker has to acknowledge a cancelled call before it is killed."""
    max_sessions: int | None = None
    """Open sessions allowed at once (one more raises ``PoolSaturated``)."""
    session_ttl: float | None = None
    """Default idle lifetime of a session."""
    stream_window: int = 16
    """Stream items a worker may send ahead of the consumer (backpressure window)."""
    pipeline: int = 2
    """Calls a busy worker may hold queued in its socket behind the one it runs, so it never
    waits for the parent between short calls (0: off). Only calls with no session or stream,
    behind short calls (see ``pipeline_below`` and :func:`dspex.pool.scheduler.pick_pipelined`)."""
    pipeline_below: float = 0.01
    """Seconds: a call is pipelined only behind calls whose method recently ran for less than
    this, and that have run for less than this so far (bounds the wait behind them)."""
    codec: str | None = None
    """``"module:object"`` with ``default(obj)`` and ``ext_hook(code, data)`` for msgpack
    extension types; imported in the parent and in every worker."""
    backend: Literal["process", "ray"] = "process"
    """Where workers run: ``"process"`` (supervised subprocesses here) or ``"ray"`` (Ray
    actors, see :mod:`dspex.pool.ray_backend`; needs ``pip install 'dspex[ray]'``)."""
    address: str | None = None
    """For ``backend="ray"``: the cluster to join (``None`` starts a local one unless Ray is
    already initialized; ``"auto"``; ``"ray://host:10001"``)."""

    def __post_init__(self) -> None:
        _check_target(self.target, "target")
        if self.backend not in ("process", "ray"):
            raise ConfigurationError(
                f"pool option 'backend' must be 'process' or 'ray', got {self.backend!r}",
                field="backend",
            )
        if self.address is not None and not isinstance(self.address, str):
            raise ConfigurationError(
                f"pool option 'address' must be a string, got {self.address!r}", field="address"
            )
        _check_int(self, "size", 1)
        _check_int(self, "startup_batch", 1)
        _check_int(self, "max_queue", 0)
        _check_int(self, "max_init_failures", 1)
        _check_int(self, "max_restarts", 0)
        _check_int(self, "stream_window", 1)
        _check_int(self, "pipeline", 0)
        for name in (
            "max_requests",
            "cpu_limit_s",
            "open_files_limit",
            "max_processes",
            "max_sessions",
        ):
            if getattr(self, name) is not None:
                _check_int(self, name, 1)
        for name in ("startup_timeout", "restart_window", "memory_check_interval"):
            _check_positive(self, name, optional=False)
        for name in ("shutdown_timeout", "kill_grace", "cancel_grace", "pipeline_below"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise ConfigurationError(
                    f"pool option {name!r} must be a number >= 0, got {value!r}", field=name
                )
        for name in (
            "request_timeout",
            "queue_timeout",
            "ttl",
            "recycle_rss_mb",
            "memory_limit_mb",
            "session_ttl",
        ):
            _check_positive(self, name, optional=True)
        if self.memory_limit_kind not in ("rss", "address_space"):
            raise ConfigurationError(
                "pool option 'memory_limit_kind' must be 'rss' or 'address_space', "
                f"got {self.memory_limit_kind!r}",
                field="memory_limit_kind",
            )
        if self.python is not None and not isinstance(self.python, str):
            raise ConfigurationError("pool option 'python' must be a path", field="python")
        if self.cwd is not None and not isinstance(self.cwd, str):
            raise ConfigurationError("pool option 'cwd' must be a path", field="cwd")
        if not isinstance(self.env, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.env.items()
        ):
            raise ConfigurationError("pool option 'env' must map str to str", field="env")
        for name in ("preload", "pythonpath"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(x, str) for x in value):
                raise ConfigurationError(
                    f"pool option {name!r} must be a sequence of strings, got {value!r}",
                    field=name,
                )
            object.__setattr__(self, name, tuple(value))
        object.__setattr__(self, "env", dict(self.env))
        if self.codec is not None:
            _check_target(self.codec, "codec")
        if not isinstance(self.fork_server, bool):
            raise ConfigurationError(
                "pool option 'fork_server' must be a bool", field="fork_server"
            )

    @property
    def interpreter(self) -> str:
        """The worker interpreter actually used."""
        return self.python or sys.executable

    @classmethod
    def from_mapping(cls, spec: Mapping[str, Any] | PoolConfig) -> PoolConfig:
        """Build from a dict (as given to ``dspex.configure(pools=...)``) or pass a config through."""
        if isinstance(spec, PoolConfig):
            return spec
        if not isinstance(spec, Mapping):
            raise ConfigurationError(
                f"a pool spec must be a PoolConfig or a mapping, got {type(spec).__name__}"
            )
        unknown = sorted(set(spec) - _FIELDS)
        if unknown:
            raise ConfigurationError(
                f"unknown pool option(s) {', '.join(unknown)}; known: {', '.join(sorted(_FIELDS))}",
                field=unknown[0],
            )
        if "target" not in spec:
            raise ConfigurationError("pool option 'target' is required", field="target")
        return cls(**dict(spec))

    def replace(self, **changes: Any) -> PoolConfig:
        """A copy with ``changes`` applied (validated)."""
        unknown = sorted(set(changes) - _FIELDS)
        if unknown:
            raise ConfigurationError(
                f"unknown pool option(s) {', '.join(unknown)}", field=unknown[0]
            )
        return dataclasses.replace(self, **changes)


def _check_target(value: object, name: str) -> None:
    if not isinstance(value, str) or value.count(":") != 1:
        raise ConfigurationError(
            f"pool option {name!r} must look like 'package.module:attribute', got {value!r}",
            field=name,
        )
    module, attr = value.split(":")
    if not module or not attr or not all(p.isidentifier() for p in module.split(".")):
        raise ConfigurationError(
            f"pool option {name!r} must look like 'package.module:attribute', got {value!r}",
            field=name,
        )


def _check_int(config: PoolConfig, name: str, minimum: int) -> None:
    value = getattr(config, name)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigurationError(
            f"pool option {name!r} must be an integer >= {minimum}, got {value!r}", field=name
        )


def _check_positive(config: PoolConfig, name: str, *, optional: bool) -> None:
    value = getattr(config, name)
    if value is None and optional:
        return
    if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
        raise ConfigurationError(
            f"pool option {name!r} must be a number > 0{' or None' if optional else ''}, "
            f"got {value!r}",
            field=name,
        )


_FIELDS = frozenset(f.name for f in dataclasses.fields(PoolConfig))
