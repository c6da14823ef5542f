"""The parent side of the DSPy backend: a session of objects hosted in one DSPy worker.

A :class:`DSPySession` wraps one ``strict_queue`` session of the ``dspy`` pool. Every remote
object created through it is registered with its *recipe* (import path, encoded constructor
arguments, last known state); when the worker dies the pool runs :meth:`DSPySession._rebuild`
on another worker, which recreates every recipe object, so the next call succeeds. With
``rehydrate=False`` a lost worker surfaces as ``SessionLost`` instead.

Python callables in arguments cross as import paths when the worker may import them, and
otherwise as *parent callbacks*: the worker gets a function with the same name, docstring and
signature that calls back into this process (ReAct tools, metrics, reward functions).
"""

from __future__ import annotations

import functools
import inspect
import itertools
import os
import sys
import typing
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dspex import settings
from dspex.bridge.allowlist import exportable
from dspex.bridge.convert import TAG, Decoder, Encoder, encode_type, is_importable
from dspex.errors import ConfigurationError, SessionLost, SignatureError, UserError
from dspex.lm.base import BaseLM

if TYPE_CHECKING:
    from dspex.bridge.remote import RemoteObject
    from dspex.pool.base import PoolBackend, SessionBackend

__all__ = ["DSPY_POOL", "DSPySession", "dspy_pool", "http_lm_spec"]

DSPY_POOL = "dspy"
"""Name of the pool that runs DSPy (declare it in ``dspex.configure(pools=...)`` to tune it)."""


@functools.cache
def _nproc_default() -> int:
    """``RLIMIT_NPROC`` for DSPy workers: what this user runs now (tasks) plus 2,048."""
    import psutil

    uid = os.getuid()
    tasks = 0
    for proc in psutil.process_iter(["uids", "num_threads"]):
        uids, threads = proc.info["uids"], proc.info["num_threads"]
        if uids is not None and uids.real == uid and threads:
            tasks += threads
    return tasks + 2048


def _pool_defaults() -> dict[str, Any]:
    from dspex.bridge.host import CODE_EXECUTION_ENV, IMPORT_ROOTS_ENV

    current = settings.current()
    cache_dir = current.cache_dir / "dspy"
    return {
        "target": "dspex.bridge.host:make_host",
        "size": 2,
        "preload": ("dspy",),
        "request_timeout": 600.0,
        "queue_timeout": 120.0,
        "startup_timeout": 60.0,
        # bounded by default (docs/pool.md): recycle a worker grown past 1.5 GB when idle,
        # and cap the processes/threads a handler may start
        "recycle_rss_mb": 1536.0,
        "max_processes": _nproc_default(),
        # the parent's import path, so user modules on the allow-list import the same way
        "pythonpath": tuple(p for p in sys.path if p and os.path.isdir(p)),
        "env": {
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "DSPY_CACHEDIR": str(cache_dir),
            IMPORT_ROOTS_ENV: ",".join(current.dspy_import_roots),
            CODE_EXECUTION_ENV: ",".join(current.allow_code_execution),
        },
    }


def dspy_pool() -> PoolBackend:
    """The pool of DSPy workers (built from the settings on first use)."""
    from dspex.pool.registry import get_pool

    return get_pool(DSPY_POOL, default=_pool_defaults())


@functools.cache
def _http_lm_class() -> type[Any]:
    """``dspex.LM`` (imported on first use: the HTTP stack is not light)."""
    from dspex.lm.client import LM

    return LM


def http_lm_spec(lm: Any) -> dict[str, Any]:
    """What a worker needs to build the same HTTP LM in DSPy (the key travels, never logged)."""
    endpoint = lm.endpoint
    return {
        "model": lm.model,
        "api_base": endpoint.api_base or None,
        "api_key": endpoint.api_key,
        "cache": lm.cache,
        "num_retries": lm.num_retries,
        "timeout": lm.timeout,
        "kwargs": dict(lm.kwargs),
    }


@dataclass
class _Recipe:
    path: str
    args: Any
    kwargs: Any
    state: Any = None


class DSPySession:
    """Objects hosted in one DSPy worker, pinned there, rebuilt elsewhere if it dies."""

    _numbers = itertools.count(1)

    def __init__(self, *, rehydrate: bool = True, pool: PoolBackend | None = None) -> None:
        self._pool = pool
        self._rehydrate = rehydrate
        self._tag = f"s{next(self._numbers)}{uuid.uuid4().hex[:6]}"
        self._oids = itertools.count(1)
        self._recipes: dict[str, _Recipe] = {}
        self._created: set[str] = set()
        self._pending: set[str] = set()
        self._callbacks: dict[int, tuple[str, Any]] = {}
        # LMs by id(): (reference, last spec sent, the LM kept alive so its id stays unique)
        self._lm_refs: dict[int, tuple[str, dict[str, Any], Any]] = {}
        self._lm_sent: set[str] = set()  # references the worker is known to hold
        self._lm_pending: set[str] = set()  # sent in full with a request still unanswered
        self._session: SessionBackend | None = None
        self.encoder = Encoder(on_callable=self._export_callable, on_module=self._encode_module)
        self.decoder = Decoder("dspex", on_tag=self._decode_tag)

    def __repr__(self) -> str:
        return f"<DSPySession {self._tag} objects={len(self._recipes)}>"

    # ------------------------------------------------------------------ pool session
    @property
    def pool_session(self) -> SessionBackend:
        if self._session is None:
            pool = self._pool or dspy_pool()
            self._session = pool.session(
                mode="strict_queue", recipe=self._rebuild if self._rehydrate else None
            )
            for name, wrapper in self._callbacks.values():
                self._session.register_callback(name, wrapper)
        return self._session

    @property
    def worker_pid(self) -> int | None:
        pid: int | None = getattr(self._session, "worker_pid", None)  # backends without pids: None
        return pid

    async def _rebuild(self, session: SessionBackend) -> None:
        """Recreate every recipe object on the new worker (the pool calls this after a loss)."""
        self._created.clear()
        self._lm_sent.clear()  # the new worker has none of our LMs yet
        for oid, recipe in list(self._recipes.items()):
            await session.call("create", oid, recipe.path, recipe.args, recipe.kwargs, recipe.state)
            self._created.add(oid)

    def close(self) -> None:
        """Drop every object of this session in the worker."""
        if self._session is not None:
            self._session.close()
            self._session = None
        self._created.clear()
        self._lm_sent.clear()

    # ------------------------------------------------------------------ objects
    def new_object(self, path: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """Register a recipe object (created in the worker on first use); its id."""
        if not isinstance(path, str) or not path:
            raise UserError(f"a DSPy class must be named by import path, got {path!r}")
        if not path.startswith(("dspy.", "dspy:")) and ":" not in path and "." not in path:
            raise UserError(f"{path!r} is not an import path such as 'dspy.ReAct'")
        oid = f"{self._tag}.{next(self._oids)}"
        self._recipes[oid] = _Recipe(
            path, self.encoder.encode(list(args)), self.encoder.encode(kwargs)
        )
        return oid

    def recipe(self, oid: str) -> _Recipe | None:
        return self._recipes.get(oid)

    def remember_state(self, oid: str, state: Any) -> None:
        """Keep ``state`` (wire form) as the object's state in its rebuild recipe."""
        recipe = self._recipes.get(oid)
        if recipe is not None:
            recipe.state = state

    def _make(self, oid: str) -> list[Any] | None:
        """The creation recipe to send along with a request, until the worker has the object."""
        if oid in self._created:
            return None
        recipe = self._recipes.get(oid)
        if recipe is None:
            return None
        return [recipe.path, recipe.args, recipe.kwargs, recipe.state]

    def _done(self, oid: str | None, value: Any) -> Any:
        """A request succeeded: what the worker now holds (objects, LMs) is remembered."""
        if oid is not None:
            self._created.add(oid)
        if self._pending:
            self._created.update(self._pending)
            self._pending.clear()
        if self._lm_pending:  # the worker built these LMs: references suffice from now on
            self._lm_sent.update(self._lm_pending)
            self._lm_pending.clear()
        return value

    async def request(self, method: str, oid: str | None, *args: Any) -> Any:
        """Run host ``method`` for object ``oid`` in the worker; the (wire) result."""
        extra = [] if oid is None else [oid, *args, self._make(oid)]
        try:
            answer = await self.pool_session.call(method, *extra)
        except SessionLost as exc:
            if not self._lm_lost(exc):
                raise
            answer = await self.pool_session.call(method, *self._with_full_lms(extra))
        return self._done(oid, answer)

    def request_sync(self, method: str, oid: str | None, *args: Any) -> Any:
        extra = [] if oid is None else [oid, *args, self._make(oid)]
        try:
            answer = self.pool_session.call_sync(method, *extra)
        except SessionLost as exc:
            if not self._lm_lost(exc):
                raise
            answer = self.pool_session.call_sync(method, *self._with_full_lms(extra))
        return self._done(oid, answer)

    def _lm_lost(self, exc: SessionLost) -> bool:
        """The worker lacks an LM we sent by reference (it was replaced meanwhile): the call
        did not run; it is sent again with the full specs."""
        if exc.fields.get("reason") != "lm_lost":
            return False
        self._lm_sent.clear()
        return True

    def _with_full_lms(self, args: list[Any]) -> list[Any]:
        specs = {ref: spec for ref, spec, _ in self._lm_refs.values()}
        out = []
        for arg in args:
            lm = arg.get("lm") if isinstance(arg, dict) else None
            if isinstance(lm, dict) and set(lm) == {"ref"} and lm["ref"] in specs:
                self._lm_pending.add(lm["ref"])
                arg = {**arg, "lm": {**specs[lm["ref"]], "ref": lm["ref"]}}
            out.append(arg)
        return out

    def stream(self, oid: str, kwargs: Any, ctx: dict[str, Any]) -> Any:
        return self.pool_session.stream("stream", oid, kwargs, ctx, self._make(oid))

    # ------------------------------------------------------------------ encoding hooks
    # ------------------------------------------------------------------ LMs and settings
    def lm_spec(self, lm: Any, *, short: bool = False) -> dict[str, Any]:
        """How the worker gets ``lm``: an HTTP LM is rebuilt as ``dspy.LM``; any other
        ``BaseLM`` (``DummyLM``, your own) answers DSPy's requests from this process.

        ``short``: a per-call context, where an LM the session's worker already holds is sent
        as its reference only (values kept for later, such as creation recipes, carry the
        full spec: they may be replayed on another worker)."""
        if isinstance(lm, _http_lm_class()):
            spec = http_lm_spec(lm)
            return self._lm_ref(spec, lm) if short else spec
        if isinstance(lm, BaseLM):

            def ask(messages: list[dict[str, Any]], options: dict[str, Any]) -> list[str]:
                return [_text(o) for o in lm(messages=messages, **options)]

            return {"model": lm.model, "callback": self._register(lm, ask)}
        raise ConfigurationError(f"lm must be a dspex.BaseLM instance, got {type(lm).__name__}")

    def _lm_ref(self, spec: dict[str, Any], lm: Any) -> dict[str, Any]:
        """The spec once per session (with a reference), then the reference alone: the worker
        keeps the LM it built, and the key does not travel with every call."""
        known = self._lm_refs.get(id(lm))
        if known is None or known[1] != spec:  # new, or changed since: send it (again)
            ref = known[0] if known is not None else f"{self._tag}.lm{len(self._lm_refs) + 1}"
            self._lm_refs[id(lm)] = (ref, spec, lm)
            self._lm_sent.discard(ref)
        ref = self._lm_refs[id(lm)][0]
        if ref in self._lm_sent:
            return {"ref": ref}
        self._lm_pending.add(ref)
        return {**spec, "ref": ref}

    def call_context(self, lm: Any = None) -> dict[str, Any]:
        """The parent's settings a worker call runs under: the LM and the adapter."""
        current = settings.current()
        lm = lm if lm is not None else current.lm
        adapter = current.adapter
        return {
            "lm": None if lm is None else self.lm_spec(lm, short=True),
            "adapter": None if adapter is None else type(adapter).__name__,
        }

    # ------------------------------------------------------------------ callbacks
    def _register(self, owner: Any, fn: Any) -> str:
        """Register ``fn`` (standing for ``owner``) as a callback of this session; its name."""
        known = self._callbacks.get(id(owner))
        if known is None:
            name = f"{self._tag}.cb{len(self._callbacks) + 1}"
            known = (name, self._callback_wrapper(fn))
            self._callbacks[id(owner)] = known
            if self._session is not None:
                self._session.register_callback(name, known[1])
        return known[0]

    def _export_callable(self, fn: Any) -> dict[str, Any]:
        if isinstance(fn, BaseLM):  # an LM crosses as its spec
            return {TAG: "lm", "spec": self.lm_spec(fn)}
        path = is_importable(fn)
        if path is not None and exportable(path, settings.current().dspy_import_roots):
            return {TAG: "callable", "path": path}
        name = self._register(fn, fn)
        return {TAG: "callback", "name": name, **_describe_callable(fn, self.encoder)}

    def _callback_wrapper(self, fn: Any) -> Any:
        """``fn`` on wire values. Its exceptions go back on the pool's one error channel (the
        callback reply carries the typed error; the worker raises it)."""
        decode, encode = self.decoder.decode, self.encoder.encode
        if inspect.iscoroutinefunction(fn):

            async def acallback(wire_args: Any, wire_kwargs: Any) -> Any:
                return encode(await fn(*decode(wire_args), **decode(wire_kwargs)))

            return acallback

        def callback(wire_args: Any, wire_kwargs: Any) -> Any:
            return encode(fn(*decode(wire_args), **decode(wire_kwargs)))

        return callback

    def _encode_module(self, value: Any) -> dict[str, Any] | None:
        from dspex.bridge.remote import RemoteObject
        from dspex.primitives.module import Module
        from dspex.router.wrappers import unwrap

        value = unwrap(value)
        if isinstance(value, RemoteObject):
            return self._encode_remote(value)
        if isinstance(value, Module):
            return self._encode_native(value)
        return None

    def _encode_native(self, value: Any) -> dict[str, Any]:
        """A native module sent by value: DSPy builds its own equivalent from the signature,
        config and state (only kinds whose states are interchangeable, per the registry)."""
        from dspex.router.kinds import _REGISTRY

        inner = value
        kind = _REGISTRY.kind_of(inner)
        entry = _REGISTRY.entry(kind) if kind is not None else None
        if entry is None or not entry.state_compatible or entry.dspy is None:
            sendable = [
                e.name for e in map(_REGISTRY.entry, _REGISTRY.kinds()) if e.state_compatible
            ]
            raise UserError(
                f"{type(inner).__name__} is a native module, which cannot be sent to a DSPy "
                f"worker (only {', '.join(map(str, sendable))} can, by value). Run it with the "
                "native implementations instead (dspex.Evaluate, dspex.BootstrapFewShot... take "
                "user modules natively), or build the whole program with dspex.dspy(...)"
            )
        predictor = getattr(inner, "predict", inner)
        return {
            TAG: "module",
            "kind": kind,
            "dspy": entry.dspy,
            "drop_outputs": list(entry.added_outputs),
            "signature": self.encoder.encode(inner.signature),
            "config": self.encoder.encode(dict(getattr(predictor, "config", {}) or {})),
            "state": self.encoder.encode(inner.dump_state()),
        }

    def _encode_remote(self, value: RemoteObject) -> dict[str, Any]:
        other = value._dspy_session
        if other is self:
            make = self._make(value._oid)
            if make is not None:  # not in the worker yet: it is created on the way
                self._pending.add(value._oid)
            return {TAG: "object", "id": value._oid, "make": make}
        recipe = other.recipe(value._oid)
        if recipe is None:
            raise UserError(
                f"{value!r} lives in another DSPy session and has no recipe to copy it from; "
                "create related objects in one session (dspex.bridge.DSPySession) and pass "
                "session= to each"
            )
        # copy by value: same constructor, current state; its callbacks answer here too
        for name, wrapper in other._callbacks.values():
            self._callbacks.setdefault(id(wrapper), (name, wrapper))
            if self._session is not None:
                self._session.register_callback(name, wrapper)
        state = self.encoder.encode(value.dump_state()) if value._is_module else None
        lm = value.__dict__.get("_lm")
        return {
            TAG: "remote_copy",
            "path": recipe.path,
            "args": recipe.args,
            "kwargs": recipe.kwargs,
            "state": state,
            "lm": None if lm is None else self.lm_spec(lm),
        }

    def _decode_tag(self, tag: str, data: dict[str, Any]) -> Any:
        if tag == "object":
            from dspex.bridge.remote import handle_for

            return handle_for(self, data)
        return NotImplemented


def _text(output: Any) -> str:
    return output.get("text") or "" if isinstance(output, dict) else str(output)


def _describe_callable(fn: Any, encoder: Encoder) -> dict[str, Any]:
    """Name, docstring and typed signature of ``fn`` for the worker-side proxy."""
    name = getattr(fn, "__name__", None) or type(fn).__name__
    out: dict[str, Any] = {"fn_name": name, "doc": inspect.getdoc(fn)}
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return out
    target = fn if inspect.isfunction(fn) or inspect.ismethod(fn) else type(fn).__call__
    try:
        hints = typing.get_type_hints(target)
    except Exception:
        hints = {}
    params = []
    for param in sig.parameters.values():
        spec: dict[str, Any] = {"name": param.name, "kind": param.kind.name}
        if param.name in hints:
            try:
                spec["type"] = encode_type(hints[param.name])
            except SignatureError:
                pass
        if param.default is not inspect.Parameter.empty:
            spec["default"] = encoder.encode(param.default)
        params.append(spec)
    out["params"] = params
    if "return" in hints:
        try:
            out["returns"] = encode_type(hints["return"])
        except SignatureError:
            pass
    return out
