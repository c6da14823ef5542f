"""The worker side of the DSPy backend: a pool handler that hosts real DSPy objects.

Each pool worker of the ``dspy`` pool runs one :class:`DSPyHost`. The parent asks it to
create objects by import path (``create``), call their methods (``call``), read and write
attributes (``get``/``set``), move their state (``dump_state``/``load_state``), stream a
module's output (``stream``) and forget them (``release``). Objects live per pool session:
a session's objects are dropped when the session ends.

Security: what the protocol may reach is decided by :mod:`dspex.bridge.allowlist` — public
classes and functions *defined in* ``dspy``, ``dspex`` and the parent's ``dspy_import_roots``,
minus a deny-list (interpreters, pickle loaders, ``os``/``subprocess``/``builtins``...); a
few side-effect-free standard modules may be named *as types* only. Code-running DSPy
modules need the parent's opt-in and then run their code in :mod:`dspex.sandbox`.

Methods (streams included) return values or raise; the pool worker sends an error as its
Error frame with the wire form of the DSPex error (:meth:`DSPyHost._error_payload`,
:mod:`dspex.bridge.errors`: the DSPy exception type and traceback, API keys scrubbed) and the
parent raises that error. A parent callback's error comes back the same way (the worker
raises it). Values cross in the tagged form of :mod:`dspex.bridge.convert`.
"""

from __future__ import annotations

import collections
import inspect
import itertools
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from dspex.bridge.allowlist import ALWAYS_ALLOWED, Policy, parse_code_opt_in
from dspex.bridge.convert import TAG, Decoder, Encoder, decode_type
from dspex.bridge.errors import error_payload
from dspex.errors import SecurityError, SessionLost, UserError
from dspex.pool.worker import _current

__all__ = [
    "ALWAYS_ALLOWED",
    "CODE_EXECUTION_ENV",
    "IMPORT_ROOTS_ENV",
    "DSPyHost",
    "dspy_lm",
    "make_host",
]

IMPORT_ROOTS_ENV = "DSPEX_DSPY_IMPORT_ROOTS"
"""Comma-separated extra import roots, set by the parent from ``dspy_import_roots``."""
CODE_EXECUTION_ENV = "DSPEX_ALLOW_CODE_EXECUTION"
"""Comma-separated code-running modules opted in, set by the parent (``allow_code_execution``)."""
_INTERPRETER_KWARGS = ("interpreter", "interpreter_factory")
_LM_CACHE_SIZE = 32


def make_host() -> DSPyHost:
    """Pool factory (``target="dspex.bridge.host:make_host"``)."""
    extra = [r.strip() for r in os.environ.get(IMPORT_ROOTS_ENV, "").split(",") if r.strip()]
    return DSPyHost(extra, parse_code_opt_in(os.environ.get(CODE_EXECUTION_ENV, "")))


class DSPyHost:
    """Hosts DSPy objects for the parent process (one per worker)."""

    def __init__(
        self,
        import_roots: list[str] | tuple[str, ...] = (),
        code_opt_in: tuple[str, ...] = (),
    ) -> None:
        import dspy

        self._dspy = dspy
        self.policy = Policy(import_roots, code_opt_in)
        self.roots = self.policy.roots
        self._sessions: dict[str | None, dict[str, Any]] = {}
        self._lms: collections.OrderedDict[tuple[Any, ...], Any] = collections.OrderedDict()
        self._lm_refs: dict[str | None, dict[str, Any]] = {}  # per session: reference -> LM
        self._secrets: set[str] = set()
        self._ids = itertools.count(1)
        self._active: dict[str | None, Any] = {}
        self._adapters: dict[str, Any] = {}  # adapter class name -> instance
        self._parent_lock = threading.Lock()
        self._encoder = Encoder(on_module=self._hold_module, on_other=self._hold_object)
        self._decoder = Decoder("dspy", resolve=self.resolve, on_tag=self._decode_tag)

    def _error_payload(self, exc: BaseException) -> dict[str, Any]:
        """How the pool worker reports our errors: the DSPex error, secrets scrubbed (the
        pool's Error frame carries it; the parent raises it)."""
        return error_payload(exc, self._secrets)

    # ------------------------------------------------------------------ import policy
    def resolve(self, path: str) -> Any:
        """A class or function named inside a value (types may come from safe stdlib roots)."""
        return self.policy.resolve(path, "type")

    # ------------------------------------------------------------------ objects
    def _objects(self, create: bool = False) -> dict[str, Any]:
        session = self._session()
        objects = self._sessions.get(session)
        if objects is None:
            objects = {}
            if create:
                self._sessions[session] = objects
        return objects

    def _session(self) -> str | None:
        call = _current.get()
        return None if call is None else call.session

    def _get(self, oid: str) -> Any:
        objects = self._objects()
        if oid not in objects:
            raise SessionLost(
                f"object {oid} is not in this worker (its session was lost or released)",
                reason="object_lost",
                object=oid,
            )
        return objects[oid]

    def _hold(self, obj: Any) -> str:
        oid = f"w{next(self._ids)}"
        self._objects(create=True)[oid] = obj
        return oid

    def _hold_module(self, value: Any) -> dict[str, Any] | None:
        if isinstance(value, self._dspy.Module):
            return {TAG: "object", "id": self._hold(value), **_describe(value, self._dspy)}
        return None

    def _hold_object(self, value: Any) -> dict[str, Any] | None:
        if inspect.ismodule(value) or inspect.isclass(value):
            return None
        return {TAG: "object", "id": self._hold(value), **_describe(value, self._dspy)}

    def _decode_tag(self, tag: str, data: dict[str, Any]) -> Any:
        if tag == "object":
            return self._obj(data["id"], data.get("make"))
        if tag == "lm":
            return self._lm(data["spec"])
        if tag == "callback":
            return self._callback_proxy(data)
        if tag == "module":
            return self._rebuild_native(data)
        if tag == "remote_copy":
            copy = self._create(
                f"copy{next(self._ids)}", data["path"], data["args"], data["kwargs"], data["state"]
            )
            if data.get("lm"):  # the module's own LM, set in the parent with set_lm()
                copy.set_lm(self._lm(data["lm"]))
            return copy
        return NotImplemented

    def _rebuild_native(self, data: dict[str, Any]) -> Any:
        """A native DSPex module sent by value becomes its DSPy equivalent (the parent names
        the DSPy class and the output fields the native signature carries on top)."""
        target = data.get("dspy")
        if not isinstance(target, str) or not target.startswith("dspy."):
            raise UserError(f"a native {data.get('kind')!r} module cannot be sent to DSPy")
        cls = self.resolve(target)
        signature = self._decoder.decode(data["signature"])
        for name in data.get("drop_outputs") or ():
            signature = signature.delete(name)
        module = cls(signature, **self._decoder.decode(data.get("config") or {}))
        state = data.get("state")
        if state:
            module.load_state(self._decoder.decode(state))
        return module

    def _callback_proxy(self, data: dict[str, Any]) -> Callable[..., Any]:
        """A function that calls the parent's callback ``data["name"]`` (same signature)."""
        host = self
        name = data["name"]
        session = self._session()

        def proxy(*args: Any, **kwargs: Any) -> Any:
            call = _current.get() or host._active.get(session)
            if call is None:
                raise UserError(f"parent callback {data.get('fn_name')!r} called outside a call")
            wire_args = host._encoder.encode(list(args))
            wire_kwargs = host._encoder.encode(kwargs)
            with host._parent_lock:  # DSPy may call tools from its own threads
                value = call.call_parent(name, wire_args, wire_kwargs)  # raises its error
            return host._decoder.decode(value)

        proxy.__name__ = proxy.__qualname__ = str(data.get("fn_name") or name)
        proxy.__doc__ = data.get("doc")
        params = []
        annotations: dict[str, Any] = {}
        for spec in data.get("params") or []:
            kind = getattr(inspect.Parameter, spec["kind"])
            default = (
                self._decoder.decode(spec["default"])
                if "default" in spec
                else inspect.Parameter.empty
            )
            annotation: Any = inspect.Parameter.empty
            if "type" in spec:
                annotation = decode_type(spec["type"], "dspy", self.resolve)
                annotations[spec["name"]] = annotation
            params.append(
                inspect.Parameter(spec["name"], kind, default=default, annotation=annotation)
            )
        returns: Any = inspect.Signature.empty
        if "returns" in data:
            returns = decode_type(data["returns"], "dspy", self.resolve)
            annotations["return"] = returns
        proxy.__signature__ = inspect.Signature(params, return_annotation=returns)  # type: ignore[attr-defined]
        proxy.__annotations__ = annotations
        return proxy

    # ------------------------------------------------------------------ LMs and settings
    def _lm(self, spec: dict[str, Any]) -> Any:
        ref = spec.get("ref")
        if ref is not None:  # the parent sends a session's LM spec once, then its reference
            refs = self._lm_refs.setdefault(self._session(), {})
            if len(spec) == 1:
                lm = refs.get(ref)
                if lm is None:
                    raise SessionLost(
                        f"LM reference {ref} is not in this worker", reason="lm_lost", object=ref
                    )
                return lm
            refs[ref] = lm = self._build_lm(spec)
            return lm
        return self._build_lm(spec)

    def _build_lm(self, spec: dict[str, Any]) -> Any:
        if "callback" in spec:
            return self._parent_lm(spec)
        key = (
            spec["model"],
            spec.get("api_base"),
            spec.get("api_key"),
            spec.get("cache", True),
            spec.get("num_retries", 3),
            spec.get("timeout"),
            tuple(sorted((k, repr(v)) for k, v in (spec.get("kwargs") or {}).items())),
        )
        lm = self._lms.get(key)
        if lm is not None:
            self._lms.move_to_end(key)
            return lm
        if spec.get("api_key"):
            self._secrets.add(spec["api_key"])
        lm = dspy_lm(self._dspy, spec)
        self._lms[key] = lm
        if len(self._lms) > _LM_CACHE_SIZE:
            self._lms.popitem(last=False)
        return lm

    def _parent_lm(self, spec: dict[str, Any]) -> Any:
        """A DSPy LM answered by the parent's LM (callback ``spec["callback"]``)."""
        key = ("callback", spec["callback"])
        lm = self._lms.get(key)
        if lm is None:
            from dspex.bridge.parent_lm import ParentLM

            proxy = self._callback_proxy({"name": spec["callback"], "fn_name": "lm"})
            lm = ParentLM(spec.get("model") or "parent", proxy)
            self._lms[key] = lm
        return lm

    @contextmanager
    def _context(self, ctx: dict[str, Any] | None) -> Iterator[None]:
        """Run under the parent's LM and adapter; remember the call for callback proxies."""
        call = _current.get()
        session = None if call is None else call.session
        outer = self._active.get(session)
        self._active[session] = call or outer
        try:
            with self._dspy.context(**self._overrides(ctx or {})):
                yield
        finally:
            if outer is None:
                self._active.pop(session, None)
            else:
                self._active[session] = outer

    def _overrides(self, ctx: dict[str, Any]) -> dict[str, Any]:
        """The DSPy settings a call runs under (``dspy.context`` keywords)."""
        overrides: dict[str, Any] = {"track_usage": True}
        if ctx.get("lm"):
            overrides["lm"] = self._lm(ctx["lm"])
        adapter = ctx.get("adapter")
        if adapter:
            overrides["adapter"] = self._adapter(adapter)
        if self.policy.code_opt_in:
            from dspex.sandbox.dspy_compat import sandbox_interpreter_factory

            overrides["interpreter_factory"] = sandbox_interpreter_factory()
        return overrides

    def _adapter(self, name: Any) -> Any:
        """The parent's adapter, by class name: one default-constructed instance per class
        (DSPy's adapters keep no per-call state)."""
        adapter = self._adapters.get(name)
        if adapter is None:
            adapter = self._adapters[name] = self.policy.adapter(self._dspy, name)()
        return adapter

    # ------------------------------------------------------------------ protocol methods
    # Every object method takes ``make``: the creation recipe ``[path, args, kwargs, state]``
    # the parent sends until it knows the worker has the object (creation costs no round trip).

    def ping(self) -> str:
        return self._dspy.__version__  # type: ignore[no-any-return]

    def _create(self, oid: str, path: str, args: Any, kwargs: Any, state: Any) -> Any:
        factory = self.policy.resolve(path, "object")
        if not callable(factory):
            raise UserError(f"{path!r} is not a class or function")
        decoded_kwargs = self._decoder.decode(kwargs)
        self.policy.check_kwargs(decoded_kwargs, path)
        _refuse_interpreters(decoded_kwargs)
        with self._context(None):
            obj = factory(*self._decoder.decode(args), **decoded_kwargs)
        if state is not None:
            obj.load_state(self._decoder.decode(state))
        self._objects(create=True)[oid] = obj
        return obj

    def _obj(self, oid: str, make: list[Any] | None) -> Any:
        if make is not None and oid not in self._objects():
            return self._create(oid, *make)
        return self._get(oid)

    def create(self, oid: str, path: str, args: Any, kwargs: Any, state: Any = None) -> Any:
        """Instantiate ``path(*args, **kwargs)`` as object ``oid`` of this session."""
        return _describe(self._create(oid, path, args, kwargs, state), self._dspy)

    def call(
        self,
        oid: str,
        method: str,
        args: Any,
        kwargs: Any,
        ctx: dict[str, Any] | None = None,
        make: list[Any] | None = None,
    ) -> Any:
        """``obj.method(*args, **kwargs)`` under the parent's settings; the encoded result."""
        obj = self._obj(oid, make)
        if not isinstance(method, str) or (method.startswith("_") and method != "__call__"):
            raise SecurityError(f"method {method!r} is private", method=str(method))
        self.policy.check_target(obj, f"method {method!r}")
        fn = getattr(obj, method)
        decoded_args = self._decoder.decode(args)
        decoded_kwargs = self._decoder.decode(kwargs)
        self.policy.check_call(fn, method, decoded_kwargs)
        _refuse_interpreters(decoded_kwargs)
        # forward(interpreter, /, ...): a caller-owned interpreter would bypass the sandbox
        if any(hasattr(a, "execute") and hasattr(a, "shutdown") for a in decoded_args):
            raise SecurityError("passing an interpreter as an argument is refused")
        with self._context(ctx):
            result = fn(*decoded_args, **decoded_kwargs)
        return self._encoder.encode(result)

    def _walk(self, obj: Any, name: str) -> tuple[Any, str]:
        """``(owner, last)`` for a dotted attribute path; private names are refused."""
        parts = name.split(".") if isinstance(name, str) else [""]
        if any(not p or p.startswith("_") for p in parts):
            raise SecurityError(f"attribute {name!r} is private or malformed", attribute=str(name))
        self.policy.check_target(obj, f"attribute {name!r}")
        for part in parts[:-1]:
            obj = getattr(obj, part)
            self.policy.check_target(obj, f"attribute {name!r}")
        return obj, parts[-1]

    def get(self, oid: str, name: str, make: list[Any] | None = None) -> Any:
        owner, last = self._walk(self._obj(oid, make), name)
        value = getattr(owner, last)
        if inspect.ismodule(value):
            raise SecurityError(f"attribute {name!r} is a module", attribute=name)
        return self._encoder.encode(value)

    def set(self, oid: str, name: str, value: Any, make: list[Any] | None = None) -> None:
        owner, last = self._walk(self._obj(oid, make), name)
        setattr(owner, last, self._decoder.decode(value))

    def dump_state(self, oid: str, make: list[Any] | None = None) -> Any:
        # tagged, so values JSON cannot carry (enum members in demos...) survive the trip
        return self._encoder.encode(self._obj(oid, make).dump_state())

    def load_state(self, oid: str, state: Any, make: list[Any] | None = None) -> None:
        self._obj(oid, make).load_state(self._decoder.decode(state))

    def release(self, oid: str, make: list[Any] | None = None) -> None:
        self._objects().pop(oid, None)

    async def stream(
        self,
        oid: str,
        kwargs: Any,
        ctx: dict[str, Any] | None = None,
        make: list[Any] | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Field-level chunks of a module's outputs (``dspy.streamify``), then the prediction.

        An error ends the stream with the pool's Error frame (typed, see ``_error_payload``)."""
        program = self._obj(oid, make)
        dspy = self._dspy
        from dspy.streaming import StreamListener, StreamResponse

        listeners = [
            StreamListener(signature_field_name=name, predict=predictor, predict_name=pname)
            for pname, predictor in program.named_predictors()
            for name in predictor.signature.output_fields
        ]
        streamed = dspy.streamify(program, stream_listeners=listeners)
        with self._context(ctx):
            async for item in streamed(**self._decoder.decode(kwargs)):
                if isinstance(item, StreamResponse):
                    yield {
                        "kind": "chunk",
                        "field": item.signature_field_name,
                        "chunk": item.chunk,
                        "predictor": item.predict_name,
                        "last": item.is_last_chunk,
                    }
                elif isinstance(item, dspy.Prediction):
                    yield {"kind": "prediction", "value": self._encoder.encode(item)}

    def drop_session(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)
        self._active.pop(session_id, None)
        self._lm_refs.pop(session_id, None)


def dspy_lm(dspy: Any, spec: dict[str, Any]) -> Any:
    """The ``dspy.LM`` a worker builds from an HTTP LM's spec (:func:`~dspex.bridge.session.
    http_lm_spec`); benchmarks build their in-process baseline with it too."""
    kwargs = dict(spec.get("kwargs") or {})
    for name in ("api_base", "api_key", "timeout"):
        if spec.get(name) is not None:
            kwargs[name] = spec[name]
    return dspy.LM(
        spec["model"],
        cache=spec.get("cache", True),
        num_retries=spec.get("num_retries", 3),
        **kwargs,
    )


def _refuse_interpreters(kwargs: dict[str, Any]) -> None:
    """Code-running modules use the sandbox the worker installs; no caller-chosen interpreter."""
    named = [k for k in _INTERPRETER_KWARGS if k in kwargs]
    if named:
        raise SecurityError(
            f"{named[0]}= is refused through the DSPy bridge: opted-in code-running modules "
            "always run their code in dspex.sandbox",
            argument=named[0],
        )


def _describe(obj: Any, dspy: Any) -> dict[str, Any]:
    cls = type(obj)
    return {
        "type": f"{cls.__module__}.{cls.__qualname__}",
        "is_module": isinstance(obj, dspy.Module),
        "callable": callable(obj),
    }
