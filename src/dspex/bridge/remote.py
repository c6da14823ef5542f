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
from dspex.errors import RemoteError, StateError, UserError
from dspex.lm.usage import current_tracker
from dspex.primitives.module import Module
from dspex.primitives.prediction import Prediction
from dspex.router.kinds import _REGISTRY, Entry
from dspex.telemetry import events

if TYPE_CHECKING:
    from dspex.primitives.streaming import StreamChunk

__all__ = ["RemoteModule", "RemoteObject", "handle_for"]

_LOCAL = frozenset({"callbacks", "history"})


def _entry(type_path: str) -> Entry | None:
    """The registry entry of a DSPy class path, if it names a known module kind."""
    return _REGISTRY.by_dspy_type(type_path)


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
        entry = _entry(kind)
        # the class paths workers report -> the names users write ("dspy.ChainOfThought")
        object.__setattr__(self, "_type", entry.dspy if entry is not None else kind)
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
        # DSPy keeps some attributes one level down; the native API has them on the module
        entry = _entry(self._type)
        return dict(entry.dspy_attributes).get(name, name) if entry is not None else name

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
            return _NO_SPAN
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
        return self.call_method("__call__", *args, **dict(kwargs))

    async def aforward(self, *args: Any, **kwargs: Any) -> Any:
        return await self.acall_method("__call__", *args, **dict(kwargs))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return Module.__call__(self, *args, **kwargs)

    async def astream(self, **kwargs: Any) -> AsyncIterator[StreamChunk | Prediction]:
        """Field-level chunks of the outputs as DSPy streams them, then the ``Prediction``."""
        from dspex.primitives.streaming import StreamChunk

        s = self._dspy_session
        ctx = s.call_context(kwargs.pop("lm", None) or self.__dict__.get("_lm"))
        async with s.stream(self._oid, s.encoder.encode(kwargs), ctx) as items:
            async for item in items:  # an error raises here, typed (the pool's Error frame)
                if item["kind"] == "chunk":
                    yield StreamChunk(
                        item["field"], item["chunk"], item.get("predictor"), item.get("last", False)
                    )
                else:
                    yield _account(s.decoder.decode(item["value"]))

    # ------------------------------------------------------------------ state interop
    def named_parameters(self) -> list[tuple[str, Any]]:
        return []

    def _native_entry(self) -> Entry:
        entry = _entry(self._type)
        if entry is None or entry.native is None or not entry.state_compatible:
            have = [e.dspy for e in map(_REGISTRY.entry, _REGISTRY.kinds()) if e.state_compatible]
            raise UserError(
                f"{self._type} has no native DSPex equivalent (available: {', '.join(map(str, have))})"
            )
        return entry

    def _build_native(self, entry: Entry, args: Any, kwargs: Any) -> Module:
        from dspex.router import build

        return build(entry.kind, *args, implementation="native", **kwargs)

    def to_native(self) -> Module:
        """A native module with this one's constructor arguments and current state."""
        entry = self._native_entry()
        recipe = self._dspy_session.recipe(self._oid)
        module: Module
        if recipe is not None:
            decode = self._dspy_session.decoder.decode
            module = self._build_native(entry, decode(recipe.args), decode(recipe.kwargs))
        else:  # a program the worker made (e.g. compiled by an optimizer): by its signature
            signature = self.get("signature")
            for name in entry.added_outputs:
                signature = signature.delete(name)
            module = self._build_native(entry, (signature,), {})
        return module.load_state(self.dump_state())

    def native_from_recipe(self) -> Module:
        """The native equivalent rebuilt from this process's recipe alone (no worker call):
        constructor arguments and the last recorded state. Used while the pool is down."""
        entry = self._native_entry()
        recipe = self._dspy_session.recipe(self._oid)
        if recipe is None:
            raise UserError(f"{self!r} has no recipe to rebuild it natively")
        decode = self._dspy_session.decoder.decode
        module = self._build_native(entry, decode(recipe.args), decode(recipe.kwargs))
        if recipe.state is not None:
            module.load_state(decode(recipe.state))
        return module

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


_NO_SPAN = nullcontext()
"""The span of a call no event handler listens to (reusable: it holds no state)."""


def _attribute_error(exc: RemoteError) -> Exception:
    if exc.fields.get("remote_type") == "builtins.AttributeError":
        return AttributeError(exc.message)
    return exc


def _account(value: Any) -> Any:
    """Add a remote prediction's token usage to the caller's usage tracker."""
    if isinstance(value, Prediction):
        tracker = current_tracker()
        usage = value.get_lm_usage()
        if tracker is not None and usage:
            for model, counts in usage.items():
                tracker.add(model, {k: v for k, v in counts.items() if isinstance(v, int)})
    return value
