"""Handles on objects hosted in a DSPy worker: ``RemoteObject`` and ``RemoteModule``.

``dspex.dspy("dspy.ReAct", signature="question -> answer", tools=[search])`` returns a
:class:`RemoteModule`: a ``dspex.Module`` (same ``__call__``/``acall``/``save``/``load``) whose
calls run in real DSPy in the ``dspy`` pool. ``dspex.Predict(sig, implementation="dspy")``
builds the same thing for ``dspy.Predict``.

Attribute reads and writes go to the hosted object (``module.demos``, ``module.signature``);
a method read this way comes back as a callable handle, so any DSPy API is reachable
(``optimizer.compile(program, trainset=...)``). Values cross in the tagged wire form of
:mod:`dspex.bridge.convert`: DSPy predictions become ``dspex.Prediction`` and so on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, ClassVar

from dspex.bridge.session import DSPySession
from dspex.errors import PoolUnhealthy, RemoteError, StateError, UserError
from dspex.primitives.module import Module
from dspex.primitives.prediction import Prediction
from dspex.telemetry import events

if TYPE_CHECKING:
    from dspex.primitives.streaming import StreamChunk

__all__ = ["NATIVE_EQUIVALENTS", "RemoteModule", "RemoteObject", "dspy", "handle_for"]

_LOCAL = frozenset({"callbacks", "history"})

# DSPy keeps some attributes one level down; the native API has them on the module
_ALIASES: dict[str, dict[str, str]] = {
    "dspy.ChainOfThought": {"demos": "predict.demos", "signature": "predict.signature"},
}

# the class paths workers report for objects they return -> the names users write
_CANONICAL = {
    "dspy.predict.predict.Predict": "dspy.Predict",
    "dspy.predict.chain_of_thought.ChainOfThought": "dspy.ChainOfThought",
}

NATIVE_EQUIVALENTS: dict[str, tuple[str, str]] = {
    "dspy.Predict": ("dspex.modules.predict", "Predict"),
    "dspy.ChainOfThought": ("dspex.modules.chain_of_thought", "ChainOfThought"),
}
"""DSPy classes whose state can be pulled into a native DSPex module (``to_native``)."""


class RemoteObject:
    """Any object hosted in a DSPy worker: attributes, methods and calls go there."""

    _dspy_session: DSPySession
    _oid: str
    _type: str
    _is_module: bool
    _callable: bool

    def _bind(self, session: DSPySession, oid: str, info: dict[str, Any]) -> None:
        object.__setattr__(self, "_dspy_session", session)
        object.__setattr__(self, "_oid", oid)
        kind = info.get("type", "?")
        object.__setattr__(self, "_type", _CANONICAL.get(kind, kind))
        object.__setattr__(self, "_is_module", bool(info.get("is_module")))
        object.__setattr__(self, "_callable", bool(info.get("callable", True)))

    def __repr__(self) -> str:
        return f"<remote {self._type} {self._oid}>"

    # ------------------------------------------------------------------ attributes
    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self.get(name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_") or name in _LOCAL:
            object.__setattr__(self, name, value)
        else:
            self.set(name, value)

    def _path(self, name: str) -> str:
        return _ALIASES.get(self._type, {}).get(name, name)

    def get(self, name: str) -> Any:
        """The hosted object's attribute ``name`` (a method comes back as a callable handle).

        Dotted names reach nested objects (``"predict.demos"``).
        """
        s = self._dspy_session
        try:
            return s.decoder.decode(s.request_sync("get", self._oid, self._path(name)))
        except RemoteError as exc:
            raise _attribute_error(exc) from None

    async def aget(self, name: str) -> Any:
        s = self._dspy_session
        try:
            return s.decoder.decode(await s.request("get", self._oid, self._path(name)))
        except RemoteError as exc:
            raise _attribute_error(exc) from None

    def set(self, name: str, value: Any) -> None:
        """Set the hosted object's attribute ``name`` (the state recipe is refreshed)."""
        s = self._dspy_session
        s.request_sync("set", self._oid, self._path(name), s.encoder.encode(value))
        if self._is_module:
            self.checkpoint()

    # ------------------------------------------------------------------ calling
    def _call_args(self, method: str, args: Any, kwargs: dict[str, Any]) -> list[Any]:
        s = self._dspy_session
        ctx = s.call_context(kwargs.pop("lm", None))
        return [method, s.encoder.encode(list(args)), s.encoder.encode(kwargs), ctx]

    def _span(self, method: str) -> AbstractContextManager[Any]:
        if not events.has_handlers():
            return nullcontext()
        meta = {"kind": self._type, "method": method, "implementation": "dspy"}
        return events.span("dspex.dspy.execute", meta)

    def call_method(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        """``obj.method(*args, **kwargs)`` in the worker (``lm=`` selects the LM for it)."""
        s = self._dspy_session
        with self._span(method):
            wire = s.request_sync("call", self._oid, *self._call_args(method, args, kwargs))
        return _account(s.decoder.decode(wire))

    async def acall_method(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        s = self._dspy_session
        with self._span(method):
            wire = await s.request("call", self._oid, *self._call_args(method, args, kwargs))
        return _account(s.decoder.decode(wire))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.call_method("__call__", *args, **kwargs)

    # ------------------------------------------------------------------ state
    def dump_state(self, json_mode: bool = True) -> dict[str, Any]:
        s = self._dspy_session
        state: dict[str, Any] = s.decoder.decode(s.request_sync("dump_state", self._oid))
        return state

    def load_state(self, state: dict[str, Any]) -> Any:
        if not isinstance(state, dict):
            raise StateError(f"module state must be a JSON object, got {type(state).__name__}")
        s = self._dspy_session
        wire = s.encoder.encode(state)
        s.request_sync("load_state", self._oid, wire)
        s.remember_state(self._oid, wire)
        return self

    def checkpoint(self) -> None:
        """Record the hosted object's current state in its rehydration recipe.

        Changes made through this handle (``load_state``, ``load``, attribute writes) are
        recorded automatically; call this after changing the object in the worker by other
        means (e.g. an optimizer that compiled it in place).
        """
        s = self._dspy_session
        s.remember_state(self._oid, s.request_sync("dump_state", self._oid))

    def release(self) -> None:
        """Forget the hosted object in the worker."""
        self._dspy_session.request_sync("release", self._oid)


class RemoteModule(RemoteObject, Module):
    """A DSPy module running in a worker, with the interface of a native ``dspex.Module``."""

    implementation: ClassVar[str] = "dspy"

    def __init__(
        self,
        target: str,
        *args: Any,
        session: DSPySession | None = None,
        rehydrate: bool = True,
        **kwargs: Any,
    ) -> None:
        if session is not None and not isinstance(session, DSPySession):
            raise UserError(f"session must be a dspex.bridge.DSPySession, got {session!r}")
        bridge = session or DSPySession(rehydrate=rehydrate)
        oid = bridge.new_object(target, args, kwargs)
        self._bind(bridge, oid, {"type": target, "is_module": True, "callable": True})

    def __repr__(self) -> str:
        return f"RemoteModule({self._type!r}, implementation='dspy')"

    def set_lm(self, lm: Any) -> None:
        """Use ``lm`` for this module's calls (a per-call ``lm=`` still wins)."""
        object.__setattr__(self, "_lm", lm)

    def get_lm(self) -> Any:
        return self.__dict__.get("_lm")

    def call_method(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("lm", self.__dict__.get("_lm"))
        return super().call_method(method, *args, **kwargs)

    async def acall_method(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("lm", self.__dict__.get("_lm"))
        return await super().acall_method(method, *args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self.call_method("__call__", *args, **dict(kwargs))
        except PoolUnhealthy as exc:
            return self._fallback(exc)(*args, **kwargs)

    async def aforward(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await self.acall_method("__call__", *args, **dict(kwargs))
        except PoolUnhealthy as exc:
            return await self._fallback(exc).acall(*args, **kwargs)

    def _fallback(self, error: PoolUnhealthy) -> Module:
        """The native equivalent to run while the DSPy pool is unhealthy (``allow_fallback``)."""
        from dspex import settings

        native: Module | None = self.__dict__.get("_native_fallback")
        if native is not None:
            return native
        recipe = self._dspy_session.recipe(self._oid)
        if (
            not settings.current().allow_fallback
            or self._type not in NATIVE_EQUIVALENTS
            or recipe is None
        ):
            raise error
        decode = self._dspy_session.decoder.decode
        native = self._native_class()(*decode(recipe.args), **decode(recipe.kwargs))
        if recipe.state is not None:
            native.load_state(decode(recipe.state))
        if self.__dict__.get("_lm") is not None:
            native.set_lm(self.__dict__["_lm"])
        object.__setattr__(self, "_native_fallback", native)
        events.emit(
            "dspex.router.fallback",
            {},
            {
                "kind": self._type,
                "from": "dspy",
                "to": "native",
                "when": "call",
                "reason": f"dspy pool unhealthy: {error.message}",
            },
        )
        return native

    def _native_class(self) -> Any:
        import importlib

        module, name = NATIVE_EQUIVALENTS[self._type]
        return getattr(importlib.import_module(module), name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return Module.__call__(self, *args, **kwargs)

    async def astream(self, **kwargs: Any) -> AsyncIterator[StreamChunk | Prediction]:
        """Field-level chunks of the outputs as DSPy streams them, then the ``Prediction``."""
        from dspex.bridge.errors import raise_payload
        from dspex.primitives.streaming import StreamChunk

        s = self._dspy_session
        ctx = s.call_context(kwargs.pop("lm", None) or self.__dict__.get("_lm"))
        async with s.stream(self._oid, s.encoder.encode(kwargs), ctx) as items:
            async for ok, item in items:
                if not ok:
                    raise_payload(item)
                if item["kind"] == "chunk":
                    yield StreamChunk(
                        item["field"], item["chunk"], item.get("predictor"), item.get("last", False)
                    )
                else:
                    yield _account(s.decoder.decode(item["value"]))

    # ------------------------------------------------------------------ state interop
    def named_parameters(self) -> list[tuple[str, Any]]:
        return []

    def to_native(self) -> Module:
        """A native module with this one's constructor arguments and current state."""
        if self._type not in NATIVE_EQUIVALENTS:
            raise UserError(
                f"{self._type} has no native DSPex equivalent (available: "
                f"{', '.join(NATIVE_EQUIVALENTS)})"
            )
        recipe = self._dspy_session.recipe(self._oid)
        module: Module
        if recipe is not None:
            decode = self._dspy_session.decoder.decode
            module = self._native_class()(*decode(recipe.args), **decode(recipe.kwargs))
        else:  # a program the worker made (e.g. compiled by an optimizer): by its signature
            signature = self.get("signature")
            if self._type == "dspy.ChainOfThought":
                signature = signature.delete("reasoning")
            module = self._native_class()(signature)
        return module.load_state(self.dump_state())

    def push_native(self, native: Module) -> RemoteModule:
        """Load a native module's state here (e.g. demos learned natively)."""
        self.load_state(native.dump_state())
        return self


def handle_for(session: DSPySession, data: dict[str, Any]) -> RemoteObject:
    """A handle for an object a worker returned (it has no recipe: not rebuilt after a loss)."""
    handle: RemoteObject
    if data.get("is_module"):
        handle = RemoteModule.__new__(RemoteModule)
        Module._base_init(handle)
    else:
        handle = RemoteObject.__new__(RemoteObject)
    handle._bind(session, data["id"], data)
    return handle


def _attribute_error(exc: RemoteError) -> Exception:
    if exc.fields.get("remote_type") == "builtins.AttributeError":
        return AttributeError(exc.message)
    return exc


def _account(value: Any) -> Any:
    """Add a remote prediction's token usage to the caller's usage tracker."""
    if isinstance(value, Prediction):
        from dspex.lm.usage import current_tracker

        tracker = current_tracker()
        usage = value.get_lm_usage()
        if tracker is not None and usage:
            for model, counts in usage.items():
                tracker.add(model, {k: v for k, v in counts.items() if isinstance(v, int)})
    return value


def dspy(
    target: str,
    *args: Any,
    session: DSPySession | None = None,
    rehydrate: bool = True,
    **kwargs: Any,
) -> RemoteModule:
    """Any DSPy class, hosted in a worker: ``dspex.dspy("dspy.ReAct", "q -> a", tools=[f])``.

    ``target`` is an import path (``"dspy.ReAct"``, or ``"mypkg.programs:MyProgram"`` for a
    package allowed by ``dspy_import_roots``). Arguments may include signatures, examples,
    pydantic types, native or remote modules and Python callables (tools, metrics): callables
    the worker cannot import become callbacks into this process. The object is created on
    first use; with ``rehydrate=True`` it is rebuilt (constructor + last state) if its worker
    dies, otherwise its next call raises ``SessionLost``.
    """
    if not isinstance(target, str):
        raise UserError(f"dspex.dspy() takes an import path such as 'dspy.ReAct', got {target!r}")
    return RemoteModule(target, *args, session=session, rehydrate=rehydrate, **kwargs)
