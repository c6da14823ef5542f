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
import types
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import Any

from dspex import settings
from dspex.lm.usage import UsageTracker
from dspex.primitives.prediction import Prediction
from dspex.utils.callback import begin
from dspex.utils.inspect_history import CALLERS

__all__ = ["CALLERS", "call_async", "call_sync", "forward_in_call", "warn_direct_forward"]

logger = logging.getLogger("dspex.primitives.module")


_IN_CALL: ContextVar[int] = ContextVar("dspex_in_module_call", default=0)
"""``id`` of the module whose ``__call__``/``acall`` is about to run its forward."""


class _Scope:
    """One module call's place on the caller stack, and the usage tracker it opened if it is
    the outermost call under ``track_usage=True`` (``tracker``; ``None``: not tracking here).
    :func:`_enter` / :meth:`close` bracket the forward (plain calls: this runs per module
    call, so no context-manager generator)."""

    __slots__ = ("callers", "token", "tracker")

    def __init__(self, callers: Token[Any], tracker: UsageTracker | None, token: Any) -> None:
        self.callers = callers
        self.tracker = tracker
        self.token = token

    def close(self) -> None:
        if self.token is not None:
            settings._scoped.reset(self.token)
        CALLERS.reset(self.callers)


def _enter(module: Any) -> _Scope:
    """Push ``module`` on the caller stack; open a usage tracker if this call is the outermost
    one under ``track_usage=True``."""
    callers = CALLERS.set((*CALLERS.get(), module))
    now = settings.current()
    if now.track_usage and now.usage_tracker is None:
        tracker = UsageTracker()
        return _Scope(callers, tracker, settings._scoped.set(now.replace(usage_tracker=tracker)))
    return _Scope(callers, None, None)


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


def _signature_of(module: Any) -> Callable[..., Any]:
    call: Callable[..., Any] = type(module).__call__
    return call


def call_sync(
    module: Any, run: Callable[[], Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Run ``run()`` (which calls the forward) as one module call, with its callbacks."""
    call = begin(module, _signature_of(module), args, kwargs)
    try:
        scope = _enter(module)
        try:
            token = _IN_CALL.set(id(module))
            try:
                output = run()
            finally:
                _IN_CALL.reset(token)
            _attach_usage(scope.tracker, output)
        finally:
            scope.close()
    except BaseException as exc:
        if call is not None:
            call.end(None, exc)
        raise
    if call is not None:
        call.end(output, None)
    return output


async def call_async(
    module: Any, run: Callable[[], Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """:func:`call_sync` for ``acall``: ``run()`` returns the awaitable to await."""
    call = begin(module, _signature_of(module), args, kwargs)
    try:
        scope = _enter(module)
        try:
            token = _IN_CALL.set(id(module))
            try:
                awaitable = run()
            finally:
                _IN_CALL.reset(token)
            output = await awaitable
            _attach_usage(scope.tracker, output)
        finally:
            scope.close()
    except BaseException as exc:
        if call is not None:
            call.end(None, exc)
        raise
    if call is not None:
        call.end(output, None)
    return output


def forward_in_call(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``module.forward(*args, **kwargs)`` as the module's own call (for a worker thread)."""
    token = _IN_CALL.set(id(module))
    try:
        return module.forward(*args, **kwargs)
    finally:
        _IN_CALL.reset(token)


class CheckedForward:
    """A subclass's ``forward``, wrapped: a call that does not come from the module's own
    ``__call__``/``acall`` logs DSPy's warning (the call still runs). A class, not a closure,
    so programs stay picklable (``save(dir, save_program=True)``)."""

    __dspex_checked__ = True

    def __init__(self, forward: Callable[..., Any]) -> None:
        self.forward = forward
        functools.update_wrapper(self, forward)

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        return self if obj is None else types.MethodType(self, obj)

    def __call__(self, module: Any, /, *args: Any, **kwargs: Any) -> Any:
        # ``module`` is positional-only: a signature may have an input field named "module"
        if _IN_CALL.get() != id(module):
            logger.warning(
                f"Calling module.forward(...) on {type(module).__name__} directly is discouraged. "
                "Please use module(...) instead."
            )
        else:
            _IN_CALL.set(0)  # the module's own forward: its children are checked afresh
        return self.forward(module, *args, **kwargs)


def warn_direct_forward(forward: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``forward`` in :class:`CheckedForward`."""
    return CheckedForward(forward)
