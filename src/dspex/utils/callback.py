"""Callbacks as DSPy has them: :class:`BaseCallback` hooks called around module, LM, adapter,
tool, evaluate and compile calls.

Callbacks come from ``dspex.configure(callbacks=[...])`` (global) plus the called object's own
``callbacks`` list. :func:`with_callbacks` wraps a method (sync or async): it calls
``on_<kind>_start(call_id, instance, inputs)`` before and ``on_<kind>_end(call_id, outputs,
exception)`` after, where the kind follows from the object (an LM, an adapter's ``format`` or
``parse``, a tool, an evaluation, an optimizer, otherwise a module). A failing callback is
logged and never breaks the call.
"""

from __future__ import annotations

import functools
import inspect
import logging
import types
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, TypeVar, cast

from dspex import settings

__all__ = [
    "ACTIVE_CALL_ID",
    "BaseCallback",
    "active_callbacks",
    "callback_kind",
    "is_code_interpreter",
    "with_callbacks",
    "with_compile_callbacks",
]

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

ACTIVE_CALL_ID: ContextVar[str | None] = ContextVar("dspex_active_call_id", default=None)
"""The id of the innermost call whose callbacks are running (its children see it as parent)."""


class BaseCallback:
    """Override the hooks you need; every hook does nothing by default.

    ``inputs`` is the call's arguments by name; ``outputs`` its result (``None`` on error);
    ``exception`` the error it raised, if any.
    """

    def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        """A module's ``__call__``/``acall`` starts."""

    def on_module_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        """A module call ended."""

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        """An LM call starts (``inputs`` holds ``prompt``/``messages`` and the options)."""

    def on_lm_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        """An LM call ended."""

    def on_adapter_format_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        """An adapter starts formatting a signature, demos and inputs into messages."""

    def on_adapter_format_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        """An adapter's ``format`` ended."""

    def on_adapter_parse_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        """An adapter starts parsing an LM reply."""

    def on_adapter_parse_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        """An adapter's ``parse`` ended."""

    def on_tool_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        """A tool call starts."""

    def on_tool_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        """A tool call ended."""

    def on_evaluate_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        """An evaluation starts."""

    def on_evaluate_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        """An evaluation ended."""

    def on_compile_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        """An optimizer's ``compile`` starts."""

    def on_compile_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        """An optimizer's ``compile`` ended."""

    def on_interpreter_execute_start(
        self, call_id: str, instance: Any, inputs: dict[str, Any]
    ) -> None:
        """A code interpreter starts running code."""

    def on_interpreter_execute_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        """A code interpreter finished running code."""

    def on_interpreter_tool_call_start(
        self, call_id: str, instance: Any, inputs: dict[str, Any]
    ) -> None:
        """Code in an interpreter calls a host-side tool (``inputs``: name and kwargs)."""

    def on_interpreter_tool_call_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        """A host-side tool called from an interpreter returned (its raw result) or raised."""

    def on_interpreter_startup_start(
        self, call_id: str, instance: Any, inputs: dict[str, Any]
    ) -> None:
        """A code interpreter starts (explicitly, or lazily on its first ``execute``)."""

    def on_interpreter_startup_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        """A code interpreter's start ended."""

    def on_interpreter_shutdown_start(
        self, call_id: str, instance: Any, inputs: dict[str, Any]
    ) -> None:
        """A code interpreter shuts down (every call, even a repeated one)."""

    def on_interpreter_shutdown_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        """A code interpreter's shutdown ended."""


_INTERPRETER_OPERATIONS = {
    "execute": "execute",
    "invoke_tool": "tool_call",
    "start": "startup",
    "shutdown": "shutdown",
}
"""Interpreter method -> the ``on_interpreter_<operation>_*`` hooks its calls fire."""


def is_code_interpreter(instance: Any) -> bool:
    """Whether ``instance`` has the shape of DSPy's ``CodeInterpreter`` protocol: a ``tools``
    attribute and ``start``/``execute``/``shutdown`` methods (structural, as DSPy checks)."""
    if not hasattr(instance, "tools"):
        return False
    return all(callable(getattr(instance, name, None)) for name in ("start", "execute", "shutdown"))


_CLASS_KINDS = (
    ("BaseLM", "lm"),
    ("Evaluate", "evaluate"),
    ("Teleprompter", "compile"),
    ("Tool", "tool"),
)


def callback_kind(instance: Any, method: str) -> str:
    """Which hooks a call of ``instance.method`` fires: ``lm``, ``adapter_format``, ``module``...

    A class may name its kind with a ``_dspex_callback_kind`` attribute; otherwise the kind
    follows from its bases (an LM, an adapter, a tool, an evaluation, an optimizer, a module).
    """
    declared = getattr(type(instance), "_dspex_callback_kind", None)
    if isinstance(declared, str):
        return declared
    from dspex.adapters.base import Adapter
    from dspex.lm.base import BaseLM

    if isinstance(instance, BaseLM):
        return "lm"
    if isinstance(instance, Adapter):
        if method in ("format", "parse"):
            return f"adapter_{method}"
        raise ValueError(f"Unsupported adapter method for using callback: {method}.")
    names = {cls.__name__ for cls in type(instance).__mro__}
    if "Evaluate" not in names and is_code_interpreter(instance):
        operation = _INTERPRETER_OPERATIONS.get(method)
        if operation is None:
            raise ValueError(f"Unsupported interpreter method for using callback: {method}.")
        return f"interpreter_{operation}"
    for name, kind in _CLASS_KINDS:
        if name in names:
            return kind
    return "module"


def active_callbacks(instance: Any) -> list[Any]:
    """The global callbacks, then the instance's own."""
    return [*settings.current().callbacks, *(getattr(instance, "callbacks", None) or ())]


def _hooks(callback: Any, kind: str) -> bool:
    """Whether ``callback`` wants the hooks of ``kind`` calls: every kind unless its class
    names the few it hooks in ``_dspex_callback_kinds`` (DSPex's own callbacks do, so a
    compile's LM-call counter does not make every module and adapter call pay for hooks
    that do nothing)."""
    kinds = getattr(type(callback), "_dspex_callback_kinds", None)
    return kinds is None or kind in kinds


@functools.lru_cache(maxsize=1024)
def _signature(fn: Callable[..., Any]) -> inspect.Signature:
    return inspect.signature(fn)


def _inputs(
    fn: Callable[..., Any], instance: Any, args: tuple[Any, ...], kw: dict[str, Any]
) -> dict[str, Any]:
    """The call's arguments by parameter name, defaults included (``self`` left out)."""
    try:
        bound = _signature(fn).bind(instance, *args, **kw)
    except TypeError:
        return {"args": args, "kwargs": kw}
    bound.apply_defaults()
    inputs = dict(bound.arguments)
    inputs.pop(next(iter(inputs)), None)
    return inputs


class _Call:
    """One call's callbacks: start, then end with the outcome (each callback's error logged)."""

    __slots__ = ("call_id", "callbacks", "kind", "token")

    def __init__(self, callbacks: list[Any], kind: str) -> None:
        self.callbacks = callbacks
        self.kind = kind
        self.call_id = uuid.uuid4().hex
        self.token: Any = None

    def start(self, instance: Any, inputs: dict[str, Any]) -> None:
        for callback in self.callbacks:
            try:
                getattr(callback, f"on_{self.kind}_start")(
                    call_id=self.call_id, instance=instance, inputs=inputs
                )
            except Exception as exc:
                logger.warning(f"Error when calling callback {callback}: {exc}")
        self.token = ACTIVE_CALL_ID.set(self.call_id)

    def end(self, outputs: Any, exception: BaseException | None) -> None:
        ACTIVE_CALL_ID.reset(self.token)
        for callback in self.callbacks:
            try:
                getattr(callback, f"on_{self.kind}_end")(
                    call_id=self.call_id, outputs=outputs, exception=exception
                )
            except Exception as exc:
                logger.warning(
                    f"Error when applying callback {callback}'s end handler on {self.kind}: {exc}."
                )


def has_callbacks(instance: Any) -> bool:
    """Whether any callback may see a call on ``instance`` (its own, or the settings' in
    force): checked before :func:`begin` on every module call, format and parse."""
    return bool(
        getattr(instance, "callbacks", None) or (settings.scoped() or settings.current()).callbacks
    )


def begin(
    instance: Any, method: Callable[..., Any], args: tuple[Any, ...], kw: dict[str, Any]
) -> _Call | None:
    """Start the callbacks of one call (``None`` when there are none: the fast path)."""
    configured = (settings.scoped() or settings.current()).callbacks  # no frame in a context()
    own = getattr(instance, "callbacks", None)
    if not configured and not own:
        return None  # no list built: this runs for every module call, format and parse
    callbacks = [*configured, *(own or ())]  # active_callbacks' order
    try:
        kind = callback_kind(instance, method.__name__)
    except ValueError as exc:  # DSPy logs a hook it cannot pick and runs the call
        logger.warning(f"Error when calling callbacks of {method.__name__}: {exc}")
        return None
    callbacks = [callback for callback in callbacks if _hooks(callback, kind)]
    if not callbacks:
        return None
    call = _Call(callbacks, kind)
    call.start(instance, _inputs(method, instance, args, kw))
    return call


def with_callbacks(fn: F) -> F:
    """Decorate a method (sync or async) so callbacks see its calls, as DSPy's decorator does."""
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            if not has_callbacks(self):
                return await fn(self, *args, **kwargs)
            call = begin(self, fn, args, kwargs)
            if call is None:
                return await fn(self, *args, **kwargs)
            try:
                result = await fn(self, *args, **kwargs)
            except BaseException as exc:
                call.end(None, exc)
                raise
            call.end(result, None)
            return result

        return cast(F, async_wrapper)

    fixed = _fixed_arity_wrapper(fn)
    if fixed is not None:
        return cast(F, functools.wraps(fn)(fixed))

    @functools.wraps(fn)
    def sync_wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not has_callbacks(self):
            return fn(self, *args, **kwargs)  # no callbacks anywhere: no begin() and its work
        return _called(fn, self, args, kwargs)

    return cast(F, sync_wrapper)


def _called(fn: Callable[..., Any], self: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
    """A sync wrapper's call when some callback may see it."""
    call = begin(self, fn, args, kw)
    if call is None:
        return fn(self, *args, **kw)
    try:
        result = fn(self, *args, **kw)
    except BaseException as exc:
        call.end(None, exc)
        raise
    call.end(result, None)
    return result


# The wrappers reach everything through module functions (no module object, no context
# variable), so a class defined in a script still pickles by value (cloudpickle) wrapped.
_FIXED_TEMPLATE = """\
def wrapper({params}):
    if not _dspex_has_callbacks({self}):
        return _dspex_fn({params})
    return _dspex_called(_dspex_fn, {self}, ({rest}), {{}})
"""


def _fixed_arity_wrapper(fn: Callable[..., Any]) -> Callable[..., Any] | None:
    """The sync wrapper for a method whose parameters are all plain positional-or-keyword
    ones without defaults (``Adapter.format``/``parse``): built with the method's own
    parameters, so the call without callbacks packs no ``*args``/``**kwargs`` (they cost
    more than the rest of the wrapper on every format and parse). ``None`` for any other
    method (the generic wrapper). Same behaviour: same names for keyword calls, and an
    arity error names the method (``functools.wraps`` gives it its qualified name)."""
    if type(fn) is not types.FunctionType:
        return None
    code = fn.__code__
    if (
        code.co_flags & (inspect.CO_VARARGS | inspect.CO_VARKEYWORDS)
        or code.co_kwonlyargcount
        or code.co_posonlyargcount
        or fn.__defaults__
        or not code.co_argcount
    ):
        return None
    params = code.co_varnames[: code.co_argcount]
    if any(name.startswith("_dspex_") or name in ("getattr",) for name in params):
        return None
    rest = "".join(f"{name}, " for name in params[1:])
    source = _FIXED_TEMPLATE.format(params=", ".join(params), self=params[0], rest=rest)
    namespace: dict[str, Any] = {
        "_dspex_has_callbacks": has_callbacks,
        "_dspex_fn": fn,
        "_dspex_called": _called,
    }
    exec(compile(source, f"<with_callbacks {fn.__qualname__}>", "exec"), namespace)
    wrapper: Callable[..., Any] = namespace["wrapper"]
    return wrapper


_ACTIVE_COMPILES: ContextVar[tuple[tuple[int, int, int | None], ...]] = ContextVar(
    "dspex_active_compiles", default=()
)
"""The (optimizer, thread, task) of each ``compile`` running in this context."""


def _compile_key(instance: Any) -> tuple[int, int, int | None]:
    import asyncio
    import threading

    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running loop
        task = None
    return id(instance), threading.get_ident(), None if task is None else id(task)


def _enter_compile(instance: Any) -> Any:
    """Mark a compile of ``instance`` as running here; ``None`` when one already is (then the
    call runs without callbacks)."""
    active = _ACTIVE_COMPILES.get()
    key = _compile_key(instance)
    if key in active:
        return None
    return _ACTIVE_COMPILES.set((*active, key))


def _exit_compile(token: Any) -> None:
    _ACTIVE_COMPILES.reset(token)


def with_compile_callbacks(fn: F) -> F:
    """:func:`with_callbacks` for an optimizer's ``compile``, firing once per compile: an
    override calling ``super().compile`` on the same optimizer (same thread and task) runs
    the inner one bare, while a compile of the same optimizer in a child task nests.

    The wrappers reach the context only through module functions, so a class defined in a
    script still pickles by value (cloudpickle) with its wrapped ``compile``.
    """
    if getattr(fn, "_dspex_compile_callbacks", False):
        return fn
    wrapped = with_callbacks(fn)
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            token = _enter_compile(self)
            if token is None:
                return await fn(self, *args, **kwargs)
            try:
                return await wrapped(self, *args, **kwargs)
            finally:
                _exit_compile(token)

        async_wrapper._dspex_compile_callbacks = True  # type: ignore[attr-defined]
        return cast(F, async_wrapper)

    @functools.wraps(fn)
    def sync_wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        token = _enter_compile(self)
        if token is None:
            return fn(self, *args, **kwargs)
        try:
            return wrapped(self, *args, **kwargs)
        finally:
            _exit_compile(token)

    sync_wrapper._dspex_compile_callbacks = True  # type: ignore[attr-defined]
    return cast(F, sync_wrapper)
