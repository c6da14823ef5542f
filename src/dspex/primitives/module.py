"""``Module``: the base of every program, native or remote; DSPy's state format for save/load.

A module defines ``aforward`` (async, preferred) or ``forward`` (sync). ``__call__`` and
``acall`` pick whichever exists: a sync-only module is run in a worker thread from async
callers (never blocking the event loop), an async-only one through ``run_sync`` from sync
callers (one reused loop per thread).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import sys
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import orjson

from dspex import settings
from dspex._sync import run_sync
from dspex.errors import StateError, UserError
from dspex.lm.usage import UsageTracker, _tracker
from dspex.primitives.prediction import Prediction

__all__ = ["DSPY_STATE_VERSION", "Module", "Parameter"]

logger = logging.getLogger(__name__)

DSPY_STATE_VERSION = "3.4.1"
"""The DSPy release whose JSON state format ``save``/``load`` read and write."""

M = TypeVar("M", bound="Module")


class Parameter:
    """Marker for objects that carry learnable state (demos, instructions): ``Predict``."""

    def dump_state(self, json_mode: bool = True) -> dict[str, Any]:
        raise NotImplementedError

    def load_state(self, state: dict[str, Any]) -> Any:
        raise NotImplementedError

    def reset(self) -> None:
        """Forget learned state (demos, traces)."""


class _ModuleMeta(type):
    """Guarantees base attributes even when a subclass forgets ``super().__init__()``."""

    def __call__(cls: Any, *args: Any, **kwargs: Any) -> Any:
        obj: Any = cls.__new__(cls)
        if isinstance(obj, cls):
            Module._base_init(obj)
            obj.__init__(*args, **kwargs)
        return obj


class Module(metaclass=_ModuleMeta):
    """Base class for DSPex programs (DSPy-compatible: ``forward``, ``named_predictors``...)."""

    callbacks: list[Any]
    history: list[Any]
    _compiled: bool

    def _base_init(self) -> None:
        self._compiled = False
        self.callbacks = []
        self.history = []

    def __init__(self, callbacks: list[Any] | None = None) -> None:
        self.callbacks = callbacks or []
        self._compiled = False
        self.history = []

    # ------------------------------------------------------------------ calling
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise UserError(f"{type(self).__name__} must define forward() or aforward()")

    async def aforward(self, *args: Any, **kwargs: Any) -> Any:
        raise UserError(f"{type(self).__name__} must define forward() or aforward()")

    def _has_sync_forward(self) -> bool:
        return type(self).forward is not Module.forward

    def _has_async_forward(self) -> bool:
        return type(self).aforward is not Module.aforward

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._has_sync_forward() or not self._has_async_forward():
            return _tracked_sync(self.forward, args, kwargs)
        return run_sync(self.acall(*args, **kwargs))

    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        if self._has_async_forward() or not self._has_sync_forward():
            return await _tracked_async(self.aforward(*args, **kwargs))
        # A sync-only program: keep the event loop free while it runs.
        return await asyncio.to_thread(_tracked_sync, self.forward, args, kwargs)

    # ------------------------------------------------------------------ structure
    def named_parameters(self) -> list[tuple[str, Parameter]]:
        """Learnable parameters by attribute path (DSPy's naming: ``a.b``, ``xs[0]``, ``d['k']``)."""
        visited: set[int] = set()
        named: list[tuple[str, Parameter]] = []

        def add(name: str, value: Any) -> None:
            if isinstance(value, Parameter):
                if id(value) not in visited:
                    visited.add(id(value))
                    named.append((name, value))
            elif isinstance(value, Module) and not getattr(value, "_compiled", False):
                for sub_name, param in value.named_parameters():
                    add(f"{name}.{sub_name}", param)

        if isinstance(self, Parameter):
            add("self", self)
        for name, value in self.__dict__.items():
            if isinstance(value, Parameter | Module):
                add(name, value)
            elif isinstance(value, list | tuple):
                for idx, item in enumerate(value):
                    add(f"{name}[{idx}]", item)
            elif isinstance(value, dict):
                for key, item in value.items():
                    add(f"{name}['{key}']", item)
        return named

    def parameters(self) -> list[Parameter]:
        return [param for _, param in self.named_parameters()]

    def named_predictors(self) -> list[tuple[str, Any]]:
        from dspex.modules.predict import Predict

        return [(n, p) for n, p in self.named_parameters() if isinstance(p, Predict)]

    def predictors(self) -> list[Any]:
        return [p for _, p in self.named_predictors()]

    def named_sub_modules(
        self, type_: type[Any] | None = None, skip_compiled: bool = False
    ) -> Iterator[tuple[str, Any]]:
        wanted = type_ or Module
        queue: deque[tuple[str, Any]] = deque([("self", self)])
        seen = {id(self)}
        while queue:
            name, item = queue.popleft()
            if isinstance(item, wanted):
                yield name, item
            children: list[tuple[str, Any]] = []
            if isinstance(item, Module):
                if skip_compiled and getattr(item, "_compiled", False):
                    continue
                children = [(f"{name}.{k}", v) for k, v in item.__dict__.items()]
            elif isinstance(item, list | tuple):
                children = [(f"{name}[{i}]", v) for i, v in enumerate(item)]
            elif isinstance(item, dict):
                children = [(f"{name}[{k}]", v) for k, v in item.items()]
            for child in children:
                if id(child[1]) not in seen:
                    seen.add(id(child[1]))
                    queue.append(child)

    def set_lm(self, lm: Any) -> None:
        """Use ``lm`` in every predictor of this program."""
        for _, predictor in self.named_predictors():
            predictor.lm = lm

    def get_lm(self) -> Any:
        lms = {id(p.lm): p.lm for _, p in self.named_predictors()}
        if len(lms) > 1:
            raise UserError("Multiple LMs are in use in this program; get_lm() needs exactly one.")
        return next(iter(lms.values()), None)

    def deepcopy(self: M) -> M:
        """Deep copy of parameters and sub-modules; other attributes copied shallowly on failure."""
        try:
            return copy.deepcopy(self)
        except Exception:
            pass
        new = self.__class__.__new__(self.__class__)
        for attr, value in self.__dict__.items():
            if isinstance(value, Module):
                setattr(new, attr, value.deepcopy())
                continue
            try:
                setattr(new, attr, copy.deepcopy(value))
            except Exception:
                setattr(new, attr, value)
        return new

    def reset_copy(self: M) -> M:
        new = self.deepcopy()
        for param in new.parameters():
            param.reset()
        return new

    # ------------------------------------------------------------------ state
    def dump_state(self, json_mode: bool = True) -> dict[str, Any]:
        return {
            name: param.dump_state(json_mode=json_mode) for name, param in self.named_parameters()
        }

    def load_state(self: M, state: dict[str, Any]) -> M:
        """Load DSPy-format state; validated on a copy first, so a bad state changes nothing."""
        if not isinstance(state, dict):
            raise StateError(f"module state must be a JSON object, got {type(state).__name__}")

        def apply(module: Module) -> None:
            for name, param in module.named_parameters():
                if name not in state:
                    raise StateError(
                        f"saved state has no entry for parameter {name!r} "
                        f"(has: {sorted(k for k in state if k != 'metadata')})"
                    )
                param.load_state(state[name])

        apply(self.deepcopy())
        apply(self)
        return self

    def save(self, path: str | Path, save_program: bool = False) -> None:
        """Write the state in DSPy's JSON format (loadable by ``dspy`` 3.4.1 and by DSPex)."""
        path = Path(path)
        if save_program:
            raise StateError(
                "save_program=True (whole-program cloudpickle) is not supported by native "
                "modules; save the state to a .json file instead"
            )
        if path.suffix != ".json":
            raise StateError(f"native modules save state as .json, got {str(path)!r}")
        state = self.dump_state()
        state["metadata"] = _metadata()
        try:
            blob = orjson.dumps(state, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
        except TypeError as exc:
            raise StateError(f"module state is not JSON-serializable: {exc}") from exc
        path.write_bytes(blob)

    def load(self: M, path: str | Path) -> M:
        """Load state saved by ``save`` here or by ``dspy``'s ``Module.save(...json)``."""
        path = Path(path)
        if path.suffix != ".json":
            raise StateError(f"native modules load state from .json files, got {str(path)!r}")
        try:
            state = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError as exc:
            raise StateError(f"{path} is not valid JSON: {exc}") from exc
        versions = (state.get("metadata") or {}).get("dependency_versions") or {}
        saved_dspy = versions.get("dspy")
        if saved_dspy and saved_dspy != DSPY_STATE_VERSION:
            logger.warning(
                "state in %s was saved with dspy==%s; DSPex reads the %s format",
                path,
                saved_dspy,
                DSPY_STATE_VERSION,
            )
        return self.load_state(state)


def _metadata() -> dict[str, Any]:
    # DSPy's loader compares each dependency_versions key with its own environment, so
    # only the keys it knows appear there; DSPex's own version sits beside them.
    from dspex import __version__

    return {
        "dependency_versions": {
            "python": f"{sys.version_info.major}.{sys.version_info.minor}",
            "dspy": DSPY_STATE_VERSION,
            "cloudpickle": "3.1",
        },
        "dspex_version": __version__,
    }


def _start_tracking() -> tuple[Any, Any] | None:
    """Open a usage tracker if this is the outermost tracked call (``None`` otherwise)."""
    if _tracker.get() is not None or not settings.current().track_usage:
        return None
    tracker = UsageTracker()
    return tracker, _tracker.set(tracker)


def _finish_tracking(state: tuple[Any, Any], output: Any) -> None:
    tracker, token = state
    _tracker.reset(token)
    if isinstance(output, Prediction):
        output.set_lm_usage(tracker.get_lm_usage())


def _tracked_sync(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The outermost module call records the token usage of everything beneath it."""
    state = _start_tracking()
    if state is None:
        return fn(*args, **kwargs)
    output = None
    try:
        output = fn(*args, **kwargs)
    finally:
        _finish_tracking(state, output)
    return output


async def _tracked_async(coro: Any) -> Any:
    state = _start_tracking()
    if state is None:
        return await coro
    output = None
    try:
        output = await coro
    finally:
        _finish_tracking(state, output)
    return output
