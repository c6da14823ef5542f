"""How a module call runs, shared by ``Module.__call__`` and ``Module.acall``.

One path for both: callbacks (``on_module_start``/``end``), the caller stack (each LM call is
also recorded in the history of every module it runs under, as in DSPy) and usage tracking
(with ``track_usage=True`` the outermost module call collects the token usage beneath it and
attaches it to its ``Prediction``). Only the line that runs ``forward``/``aforward`` differs.

Calling ``module.forward(...)`` directly skips all of that; as DSPy does, it logs a warning.
"""

from __future__ import annotations

import functools
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any

from dspex import settings
from dspex.errors import CallStopped
from dspex.lm.usage import UsageTracker
from dspex.primitives.prediction import Prediction
from dspex.utils.callback import begin
from dspex.utils.inspect_history import CALLERS

__all__ = [
    "CALLERS",
    "call_async",
    "call_sync",
    "forward_in_call",
    "stoppable",
    "warn_direct_forward",
]

logger = logging.getLogger("dspex.primitives.module")


_IN_CALL: ContextVar[int] = ContextVar("dspex_in_module_call", default=0)
"""``id`` of the module whose ``__call__``/``acall`` is about to run its forward."""


_STOP: ContextVar[tuple[threading.Event, ...]] = ContextVar("dspex_stop_module_calls", default=())
"""The events of the :func:`stoppable` scopes in force, innermost first: once any is set,
module calls under it are refused."""


@contextmanager
def stoppable(stop: threading.Event) -> Iterator[None]:
    """Module calls made inside (on this task, in the worker threads it starts) raise
    :class:`~dspex.errors.CallStopped` once ``stop`` is set: work that is no longer wanted
    ends at its next module call, even in a thread that cancellation cannot reach. Scopes
    nest: a call is refused once this scope or any scope around it is stopped."""
    token = _STOP.set((stop, *_STOP.get()))
    try:
        yield
    finally:
        _STOP.reset(token)


_Scope = tuple[Any, Token[Any], UsageTracker | None, Any]


def _enter(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Scope:
    """Start one module call: its callbacks (``on_module_start``), then push ``module`` on
    the caller stack and open a usage tracker if this call is the outermost one under
    ``track_usage=True``. Returns ``(the callbacks' call or None, caller-stack token, the
    tracker it opened or None, the settings token or None)`` for :func:`_leave`.

    One plain call per module call (no context-manager generator, no scope object); the
    callbacks check is :func:`~dspex.utils.callback.has_callbacks`', inline. Refuses the call
    (after ``on_module_start``, which then sees it end with the error) once the
    :func:`stoppable` scope it runs under is stopped.
    """
    now = settings.scoped() or settings.current()
    call = None
    if getattr(module, "callbacks", None) or now.callbacks:
        call = begin(module, type(module).__call__, args, kwargs)
        if call is not None:  # a callback's on_module_start may have changed the settings
            now = settings.scoped() or settings.current()
    try:
        for stop in _STOP.get():  # usually none; a loop, not any(): no generator per call
            if stop.is_set():
                raise CallStopped(
                    f"{type(module).__name__} call refused: the work it belongs to stopped"
                )
        callers = CALLERS.set((*CALLERS.get(), module))
        if now.track_usage and now.usage_tracker is None:
            tracker = UsageTracker()
            return call, callers, tracker, settings.push_scope(now.replace(usage_tracker=tracker))
    except BaseException as exc:
        if call is not None:
            call.end(None, exc)
        raise
    return call, callers, None, None


def _leave(scope: _Scope) -> None:
    if scope[3] is not None:
        settings.pop_scope(scope[3])
    CALLERS.reset(scope[1])


def _attach_usage(tracker: UsageTracker | None, output: Any) -> None:
    if tracker is None:
        return
    prediction = output[0] if isinstance(output, tuple) and output else output
    if isinstance(prediction, Prediction):
        prediction.set_lm_usage(tracker.get_total_tokens())
    else:
        logger.warning(
            "Failed to set LM usage. Please return `dspy.Prediction` object from dspy.Module to "
            "enable usage tracking."
        )


def call_sync(
    module: Any,
    run: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    checked: bool = False,
) -> Any:
    """Run ``run(*args, **kwargs)`` (the forward) as one module call, with its callbacks.
    ``checked``: ``run`` is the module's own forward without its direct-call check (the
    check would pass: this is the module's call), so its children are checked afresh."""
    scope = _enter(module, args, kwargs)
    try:
        try:
            token = _IN_CALL.set(0 if checked else id(module))
            try:
                output = run(*args, **kwargs)
            finally:
                _IN_CALL.reset(token)
            if scope[2] is not None:
                _attach_usage(scope[2], output)
        finally:
            _leave(scope)
    except BaseException as exc:
        if scope[0] is not None:
            scope[0].end(None, exc)
        raise
    if scope[0] is not None:
        scope[0].end(output, None)
    return output


async def call_async(
    module: Any, run: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """:func:`call_sync` for ``acall``: ``run(*args, **kwargs)`` returns the awaitable."""
    scope = _enter(module, args, kwargs)
    try:
        try:
            token = _IN_CALL.set(id(module))
            try:
                awaitable = run(*args, **kwargs)
            finally:
                _IN_CALL.reset(token)
            output = await awaitable
            if scope[2] is not None:
                _attach_usage(scope[2], output)
        finally:
            _leave(scope)
    except BaseException as exc:
        if scope[0] is not None:
            scope[0].end(None, exc)
        raise
    if scope[0] is not None:
        scope[0].end(output, None)
    return output


def forward_in_call(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``module.forward(*args, **kwargs)`` as the module's own call (for a worker thread)."""
    token = _IN_CALL.set(id(module))
    try:
        return module.forward(*args, **kwargs)
    finally:
        _IN_CALL.reset(token)


def warn_direct_forward(forward: Callable[..., Any]) -> Callable[..., Any]:
    """A subclass's ``forward``, wrapped: a call that does not come from the module's own
    ``__call__``/``acall`` logs DSPy's warning (the call still runs).

    A plain function, so binding it to an instance is the interpreter's own (a descriptor
    class cost two Python frames and a bound method per module call). Its body reaches
    this module only as a module object, so a wrapped class defined in a script still
    pickles by value (cloudpickle: ``save(dir, save_program=True)``).
    """

    @functools.wraps(forward)
    def checked(module: Any, /, *args: Any, **kwargs: Any) -> Any:
        # ``module`` is positional-only: a signature may have an input field named "module"
        if _this._IN_CALL.get() != id(module):
            _this.logger.warning(
                f"Calling module.forward(...) on {type(module).__name__} directly is "
                "discouraged. Please use module(...) instead."
            )
        else:
            _this._IN_CALL.set(0)  # the module's own forward: its children are checked afresh
        return forward(module, *args, **kwargs)

    checked.__dspex_checked__ = True  # type: ignore[attr-defined]
    return checked


_this = sys.modules[__name__]
