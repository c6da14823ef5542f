"""Native programs fanned out over a worker pool: ``Evaluate(backend=...)``, ``batch(backend=...)``.

``backend="process"`` uses a pool of local worker processes (CPU-bound metrics, programs that
hold the GIL); ``backend="ray"`` a pool of Ray actors (:mod:`dspex.pool.ray_backend`), on a
local or remote cluster. Both are ordinary registry pools (``"native"`` and ``"native-ray"``):
``dspex.configure(pools={"native-ray": {"size": 8, "address": "auto"}})`` tunes them, and
``shutdown_pools()`` stops them.

How a run travels:

- the program and the metric are cloudpickled *by value* when their code lives outside
  installed packages (a script, a notebook, a test file), so workers need no copy of it;
- the settings in force go with them (:data:`TRAVEL`: the LM, adapter, retriever, usage and
  history switches, and the callbacks that pickle; a callback that cannot travel is left
  behind with a warning), and every worker runs its examples inside those settings;
- examples go in chunks; a worker runs a chunk with ``num_threads`` examples in flight on its
  own event loop, each with its own deadline (``timeout``), and sends back per example the
  output, or the exception (the original type when it pickles, else
  :class:`~dspex.errors.RemoteError`), and the LM usage recorded under it.

The parent side is a batcher behind one async function per example (:meth:`FanOut.submit`),
so the caller's own runner (``Evaluate``'s executor, ``batch``'s outcome bookkeeping) keeps
deciding order, progress, logging and the ``max_errors`` / ``failure_score`` rules exactly as
in process; when it cancels the examples of a chunk, the chunk's pool call is cancelled too. A
chunk whose worker dies fails each of its examples with the pool's typed error
(:class:`~dspex.errors.WorkerCrashed`, :class:`~dspex.errors.ExecutionTimeout`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import os
import pickle
import sys
import sysconfig
import traceback
import types
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from dspex.errors import (
    ConfigurationError,
    PoolClosed,
    PoolUnhealthy,
    ProgramNotPortable,
    RemoteError,
)
from dspex.utils.callback import BaseCallback

__all__ = [
    "BACKENDS",
    "TRAVEL",
    "FanOut",
    "FanOutHost",
    "dumps_by_value",
    "make_host",
    "pool_for",
    "travelling_settings",
]

logger = logging.getLogger(__name__)

Backend = Literal["process", "ray"]
BACKENDS: tuple[str, ...] = ("process", "ray")
POOL_NAMES = {"process": "native", "ray": "native-ray"}

TRAVEL: tuple[str, ...] = (
    "lm",
    "adapter",
    "rm",
    "callbacks",
    "track_usage",
    "provide_traceback",
    "disable_history",
    "max_history_size",
    "warn_on_type_mismatch",
    "allow_tool_async_sync_conversion",
    "async_max_workers",
    "branch_idx",
)
"""The settings that go with each chunk (pools, traces, streams and trackers stay here)."""

Mode = Literal["evaluate", "batch"]


def check_backend(backend: Any) -> Backend | None:
    """``None``/``"local"``/``"thread"`` (run here) or a fan-out backend name; else an error."""
    if backend in (None, "local", "thread"):
        return None
    if backend not in BACKENDS:
        raise ConfigurationError(
            f"backend must be None (in process), 'process' or 'ray', got {backend!r}",
            field="backend",
        )
    result: Backend = backend
    return result


def _default_size(backend: Backend) -> int:
    if backend == "ray":
        try:
            import ray

            if ray.is_initialized():
                cpus = ray.cluster_resources().get("CPU", 1)  # type: ignore[no-untyped-call]
                return max(1, int(cpus))
        except ImportError:
            pass
    return max(1, os.cpu_count() or 1)


def pool_for(backend: Backend) -> Any:
    """The registry pool running fan-out chunks on ``backend`` (built on first use)."""
    from dspex.pool.registry import get_pool

    spec: dict[str, Any] = {
        "target": "dspex.pool.fanout:make_host",
        "size": _default_size(backend),
        "request_timeout": None,  # a chunk runs as long as its examples; each has a deadline
        "queue_timeout": None,
        "startup_timeout": 120.0,
    }
    if backend == "ray":
        spec["backend"] = "ray"
    return get_pool(POOL_NAMES[backend], default=spec)


# ---------------------------------------------------------------------------- pickling


def _installed_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    return tuple(os.path.realpath(r) for r in roots)


def _by_value(module_name: str) -> bool:
    """Whether code of ``module_name`` must travel by value (not an installed package)."""
    if module_name in ("__main__", "builtins") or module_name.split(".")[0] in ("dspex", "dspy"):
        return False
    module = sys.modules.get(module_name)
    path = getattr(module, "__file__", None)
    if module is None or path is None:
        return False
    real = os.path.realpath(path)
    return not any(real.startswith(root + os.sep) for root in _installed_roots())


def _code_modules(objects: list[Any]) -> set[str]:
    """Modules defining the classes and functions of ``objects`` (and of program parts)."""
    names: set[str] = set()
    for obj in objects:
        if obj is None:
            continue
        parts = [obj]
        named = getattr(obj, "named_sub_modules", None)
        if callable(named) and not isinstance(obj, type):
            try:
                parts += [m for _, m in named()]
            except Exception:  # a user object with an unusual named_sub_modules
                pass
        for part in parts:
            is_code = isinstance(part, types.FunctionType | type)
            owner = part if is_code else type(part)
            name = getattr(owner, "__module__", None)
            if isinstance(name, str):
                names.add(name)
    return {name for name in names if _by_value(name)}


@contextmanager
def _pickled_by_value(module_names: set[str]) -> Iterator[None]:
    import cloudpickle

    done: list[types.ModuleType] = []
    try:
        for name in sorted(module_names):
            module = sys.modules[name]
            try:
                cloudpickle.register_pickle_by_value(module)
            except ValueError:  # already registered by the user
                continue
            done.append(module)
        yield
    finally:
        for module in done:
            cloudpickle.unregister_pickle_by_value(module)


def _split_callbacks(callbacks: Any) -> tuple[list[Any], list[Any]]:
    """``(travelling, staying)``: the callbacks that pickle go with each chunk; the others stay
    here and see the workers' LM calls replayed (``on_lm_start``/``on_lm_end``) as each
    example's result comes back."""
    import cloudpickle

    kept: list[Any] = []
    stay: list[Any] = []
    for cb in list(callbacks or ()):
        try:
            pickle.loads(cloudpickle.dumps(cb))
        except Exception as exc:
            logger.debug("callback %r stays in this process (it cannot be pickled: %s)", cb, exc)
            stay.append(cb)
            continue
        kept.append(cb)
    return kept, stay


def _portable_callbacks(callbacks: Any) -> list[Any]:
    kept, stay = _split_callbacks(callbacks)
    for cb in stay:
        logger.warning(
            "callback %r stays in this process (it cannot be pickled); it sees the LM calls "
            "of the fan-out workers replayed, not their module calls",
            cb,
        )
    return kept


@dataclass
class _Job:
    """What every chunk of one run needs, pickled once."""

    mode: Mode
    program: Any
    metric: Any
    settings: dict[str, Any]
    concurrency: int
    timeout: float | None
    sync_lm: bool
    track_tracker: bool  # the caller records usage into its own tracker (track_usage())
    record_lm: bool = False  # callbacks stayed here: send the LM callback events back


def dumps_by_value(value: Any, parts: list[Any], where: str) -> bytes:
    """``value`` cloudpickled, the code of ``parts`` (programs, metrics, callbacks) by value
    when it lives outside installed packages; :class:`ProgramNotPortable` if it cannot be."""
    import cloudpickle

    with _pickled_by_value(_code_modules(parts)):
        try:
            return bytes(cloudpickle.dumps(value))
        except Exception as exc:
            raise ProgramNotPortable(
                f"the program cannot be sent to {where}: {type(exc).__name__}: {exc} "
                "(everything the program and metric reference must pickle)"
            ) from exc


def travelling_settings() -> dict[str, Any]:
    """The :data:`TRAVEL` settings in force here (callbacks that cannot pickle left out)."""
    from dspex import settings

    now = settings.current()
    travel = {name: getattr(now, name) for name in TRAVEL}
    travel["callbacks"] = _portable_callbacks(travel["callbacks"])
    return travel


def _travel_split() -> tuple[dict[str, Any], list[Any]]:
    """:func:`travelling_settings` and the callbacks that stay here (said at debug level:
    they see the workers' LM calls replayed)."""
    from dspex import settings

    now = settings.current()
    travel = {name: getattr(now, name) for name in TRAVEL}
    travel["callbacks"], stay = _split_callbacks(travel["callbacks"])
    return travel, stay


def _dump_job(job: _Job) -> bytes:
    parts = [job.program, job.metric, *job.settings.get("callbacks", ())]
    return dumps_by_value(job, parts, f"{job.mode} workers (run it with backend=None instead)")


# ---------------------------------------------------------------------------- worker side


def _portable_error(exc: BaseException, tb: str) -> BaseException:
    """``exc`` if it survives a pickle round trip, else a :class:`RemoteError` naming it."""
    import cloudpickle

    try:
        pickle.loads(cloudpickle.dumps(exc))
        return exc
    except Exception:
        cls = type(exc)
        name = f"{cls.__module__}.{cls.__qualname__}"
        return RemoteError(f"{name}: {exc}", remote_type=name, remote_traceback=tb)


class FanOutHost:
    """The handler in each fan-out worker: ``run_chunk(job, chunk)`` (pickled bytes)."""

    def __init__(self) -> None:
        self._jobs: OrderedDict[bytes, _Job] = OrderedDict()

    def _job(self, payload: bytes) -> _Job:
        key = hashlib.blake2b(payload, digest_size=16).digest()
        job = self._jobs.get(key)
        if job is None:
            job = pickle.loads(payload)
            self._jobs[key] = job
            while len(self._jobs) > 4:
                self._jobs.popitem(last=False)
        return job

    async def run_chunk(self, payload: bytes, chunk: bytes) -> bytes:
        import cloudpickle

        job = self._job(payload)
        items: list[Any] = pickle.loads(chunk)
        outcomes = await _run_chunk(job, items)
        return bytes(cloudpickle.dumps(outcomes))

    def ping(self) -> str:
        return "pong"


def make_host() -> FanOutHost:
    """The pool ``target`` of the fan-out pools."""
    return FanOutHost()


Outcome = tuple[bool, Any, Any, Any]
"""(ok, output or error, usage entries by LM or None, LM callback events or None)."""

LMEvent = tuple[str, str, Any, Any, Any]
"""``("start", call_id, model, inputs, None)`` or ``("end", call_id, model, outputs, error)``."""


class _LMEvents(BaseCallback):
    """A worker-side callback recording one example's LM calls, for the callbacks that stayed
    in the caller's process (a budget counting calls, a tracker holding a lock)."""

    def __init__(self) -> None:
        self.events: list[LMEvent] = []
        self._models: dict[str, Any] = {}

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        model = getattr(instance, "model", None)
        self._models[call_id] = model
        self.events.append(("start", call_id, model, inputs, None))

    def on_lm_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        model = self._models.pop(call_id, None)
        self.events.append(("end", call_id, model, outputs, exception))

    def portable(self) -> list[LMEvent]:
        """The events, their payloads dropped (``None``) where they do not pickle."""
        import cloudpickle

        try:
            pickle.loads(cloudpickle.dumps(self.events))
            return self.events
        except Exception:
            out: list[LMEvent] = []
            for kind, cid, model, _payload, error in self.events:
                if error is not None:
                    error = _portable_error(error, "")
                out.append((kind, cid, model, None, error))
            return out


async def _run_chunk(job: _Job, items: list[Any]) -> list[Outcome]:
    from dspex import settings
    from dspex.errors import ExampleTimeout
    from dspex.lm.usage import UsageTracker
    from dspex.modules.executor import AsyncCaller

    inline = job.concurrency == 1
    call_program = AsyncCaller(job.program, inline=inline, sync=job.sync_lm)
    call_metric = (
        AsyncCaller(job.metric, inline=inline, adaptive=True) if job.metric is not None else None
    )
    gate = asyncio.Semaphore(job.concurrency)

    async def one(item: Any) -> Any:
        if job.mode == "evaluate":
            prediction = await call_program(**item.inputs())
            assert call_metric is not None
            return prediction, await call_metric(item, prediction)
        args, kwargs = item
        return await call_program(*args, **kwargs)

    async def guarded(item: Any) -> Outcome:
        async with gate:
            tracker = UsageTracker() if job.track_tracker else None
            recorder = _LMEvents() if job.record_lm else None
            scoped = dict(job.settings, usage_tracker=tracker)
            if recorder is not None:
                scoped["callbacks"] = [*job.settings.get("callbacks", ()), recorder]
            with settings.context(**scoped):
                try:
                    if job.timeout is None:
                        value = await one(item)
                    else:
                        try:
                            async with asyncio.timeout(job.timeout):
                                value = await one(item)
                        except TimeoutError as exc:
                            raise ExampleTimeout(
                                f"the item did not finish within its deadline of {job.timeout} s",
                                timeout=job.timeout,
                            ) from exc
                except Exception as exc:
                    tb = "".join(traceback.format_exception(exc))
                    error = _portable_error(exc, tb)
                    if job.settings.get("provide_traceback"):
                        error.add_note(f"on the fan-out worker (pid {os.getpid()}):\n{tb}")
                    return False, error, _usage(tracker), _events(recorder)
            return True, value, _usage(tracker), _events(recorder)

    return list(await asyncio.gather(*(guarded(item) for item in items)))


def _usage(tracker: Any) -> Any:
    return None if tracker is None else {lm: list(e) for lm, e in tracker.usage_data.items()}


def _events(recorder: _LMEvents | None) -> list[LMEvent] | None:
    return None if recorder is None or not recorder.events else recorder.portable()


# ---------------------------------------------------------------------------- parent side


@dataclass
class _Chunk:
    items: list[Any] = field(default_factory=list)
    futures: list[asyncio.Future[Any]] = field(default_factory=list)


class FanOut:
    """One run's parent side: ``await submit(item)`` resolves with that item's output.

    Items submitted in the same loop iteration are grouped into chunks of ``chunk_size``
    (default: about four chunks per worker, at most 256 items); at most ``in_flight`` chunks
    (default: the pool size) run at once. The caller cancels an item by cancelling its
    ``submit``; a chunk whose items are all cancelled is not sent, or is cancelled.
    """

    def __init__(
        self,
        backend: Backend,
        mode: Mode,
        program: Any,
        metric: Any = None,
        *,
        num_threads: int | None = None,
        timeout: float | None = None,
        chunk_size: int | None = None,
        in_flight: int | None = None,
        total: int | None = None,
    ) -> None:
        from dspex import settings
        from dspex.modules.executor import customized_sync_lm

        if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
            raise ConfigurationError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        now = settings.current()
        program, self._limiter = _unwrap_limited(program)
        travel, self._stay = _travel_split()
        self._lms = _known_lms(now.lm, program) if self._stay else {}
        self.backend = backend
        self.pool = pool_for(backend)
        size = int(self.pool.config.size)
        self.in_flight = in_flight or size
        self.chunk_size = chunk_size or max(1, min(256, math.ceil((total or 1) / (size * 4))))
        tracker = now.usage_tracker
        self._tracker = tracker
        job = _Job(
            mode=mode,
            program=program,
            metric=metric,
            settings=travel,
            concurrency=int(num_threads or now.num_threads),
            timeout=timeout,
            sync_lm=customized_sync_lm(program),
            track_tracker=tracker is not None,
            record_lm=bool(self._stay),
        )
        self.payload = _dump_job(job)
        self._pending = _Chunk()
        self._gate: asyncio.Semaphore | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.chunks_sent = 0
        self.fatal: BaseException | None = None
        """A pool-level failure (no Ray, pool unhealthy or closed): raised by :meth:`drain`."""

    # ------------------------------------------------------------------ submit
    async def submit(self, item: Any) -> Any:
        """Run one item on the pool; returns its output or raises its error."""
        if self._limiter is None:
            return await self._submit(item)
        async with self._limiter:
            return await self._submit(item)

    async def _submit(self, item: Any) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._pending.items:
            loop.call_soon(self._flush)
        self._pending.items.append(item)
        self._pending.futures.append(future)
        if len(self._pending.items) >= self.chunk_size:
            self._flush()
        ok, value, usage, events = await future
        self._account(usage, events)  # here: in this item's context (an optimizer's phase)
        if ok:
            return value
        raise value

    def _account(self, usage: Any, events: list[LMEvent] | None) -> None:
        """Replay an item's worker-side LM calls to the callbacks that stayed here, and record
        its usage into the caller's tracker."""
        for kind, cid, model, payload, error in events or ():
            instance = self._lms.get(model)
            for cb in self._stay:
                try:
                    if kind == "start":
                        cb.on_lm_start(call_id=cid, instance=instance, inputs=payload or {})
                    else:
                        cb.on_lm_end(call_id=cid, outputs=payload, exception=error)
                except Exception as exc:
                    logger.warning("Error when replaying an LM call to callback %s: %s", cb, exc)
        if usage and self._tracker is not None:
            for lm, entries in usage.items():
                for entry in entries:
                    self._tracker.add_usage(lm, entry)

    def _flush(self) -> None:
        chunk, self._pending = self._pending, _Chunk()
        if not chunk.items:
            return
        if self._gate is None:
            self._gate = asyncio.Semaphore(self.in_flight)
        task = asyncio.ensure_future(self._gated(chunk, self._gate))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _gated(self, chunk: _Chunk, gate: asyncio.Semaphore) -> None:
        async with gate:
            if self.fatal is not None:
                _fail(chunk, self.fatal)
            elif not all(f.done() for f in chunk.futures):
                await self._run(chunk)

    async def _run(self, chunk: _Chunk) -> None:
        call = asyncio.ensure_future(
            self.pool.call("run_chunk", self.payload, pickle.dumps(chunk.items))
        )

        def maybe_cancel(_: asyncio.Future[Any]) -> None:
            if all(f.done() for f in chunk.futures) and not call.done():
                call.cancel()

        for future in chunk.futures:
            future.add_done_callback(maybe_cancel)
        self.chunks_sent += 1
        try:
            reply = await call
        except asyncio.CancelledError:
            for future in chunk.futures:
                future.cancel()
            raise
        except Exception as exc:  # the pool failed the whole chunk (worker death, deadline)
            if isinstance(exc, PoolUnhealthy | PoolClosed | ConfigurationError):
                self.fatal = exc  # no chunk can run: the caller gets this error, once
            _fail(chunk, exc)
            return
        outcomes: list[Outcome] = pickle.loads(reply)
        for future, outcome in zip(chunk.futures, outcomes, strict=True):
            if future.done():  # cancelled by the caller: its calls still count
                self._account(outcome[2], outcome[3])
            else:
                future.set_result(outcome)

    async def drain(self) -> None:
        """Cancel and wait for chunks still running (after the caller stopped early); raise
        the pool-level failure, if one stopped the run."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.fatal is not None:
            raise self.fatal


def _unwrap_limited(program: Any) -> tuple[Any, asyncio.Semaphore | None]:
    """A program wrapped to share a bound on concurrent runs (an optimizer's
    ``teleprompt.limits.Limited``: ``.program`` and an ``asyncio.Semaphore`` ``.limiter``):
    the wrapped program travels and the bound stays here (each item waits for a slot before
    it is sent)."""
    limiter = getattr(program, "limiter", None)
    inner = getattr(program, "program", None)
    if isinstance(limiter, asyncio.Semaphore) and inner is not None:
        return inner, limiter
    return program, None


def _known_lms(lm: Any, program: Any) -> dict[Any, Any]:
    """The caller's LM objects by model name (the instance a replayed LM call names)."""
    found: dict[Any, Any] = {}
    named = getattr(program, "named_predictors", None)
    try:
        predictors = [p for _, p in named()] if callable(named) else []
    except Exception:
        predictors = []
    for candidate in [*(getattr(p, "lm", None) for p in predictors), lm]:
        model = getattr(candidate, "model", None)
        if candidate is not None and model is not None:
            found.setdefault(model, candidate)
    return found


def _fail(chunk: _Chunk, exc: BaseException) -> None:
    for future in chunk.futures:
        if not future.done():
            future.set_exception(exc)


def resolve(
    backend: Any,
    mode: Mode,
    program: Any,
    metric: Any = None,
    *,
    num_threads: int | None = None,
    timeout: float | None = None,
    total: int | None = None,
) -> FanOut | None:
    """A :class:`FanOut` for ``backend`` (``None`` when the run stays in process)."""
    name = check_backend(backend)
    if name is None:
        return None
    return FanOut(
        name, mode, program, metric, num_threads=num_threads, timeout=timeout, total=total
    )
