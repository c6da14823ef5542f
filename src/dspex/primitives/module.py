"""``Module``: the base of every program, native or remote; DSPy's state format for save/load.

A module defines ``aforward`` (async, preferred) or ``forward`` (sync). ``__call__`` and
``acall`` pick whichever exists: a sync-only module is run in a worker thread from async
callers (never blocking the event loop), an async-only one through ``run_sync`` from sync
callers (one reused loop per thread).
"""

from __future__ import annotations

import contextvars
import copy
import functools
import logging
import re
from collections import deque
from collections.abc import Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO, TypeVar

import orjson

from dspex._sync import run_sync
from dspex.errors import CallError, StateError, StateKeyMissing, UserError
from dspex.primitives.calling import call_async, call_sync, forward_in_call, warn_direct_forward
from dspex.utils.saving import get_dependency_versions  # a module global: DSPy-style tests patch it

__all__ = [
    "ACALL",
    "DSPY_STATE_VERSION",
    "Module",
    "Parameter",
    "acall_awaitable",
    "set_attribute_by_name",
]

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


#: ``Module.load(..., allow_unsafe_lm_state=True)``: the file is trusted, so the predictors'
#: ``load_state`` keep saved LM endpoints and custom LM classes (DSPy's opt-in)
TRUSTED_LM_STATE: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "dspex_trusted_lm_state", default=False
)


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

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        forward = cls.__dict__.get("forward")
        if callable(forward) and not getattr(forward, "__dspex_checked__", False):
            cls.forward = warn_direct_forward(forward)  # type: ignore[method-assign]

    #: a module that takes keyword arguments only (``Predict``) says so here: a positional
    #: argument then raises :meth:`_positional_error`'s message before any callback runs
    _keyword_only: bool = False

    def _positional_error(self) -> str:
        return f"{type(self).__name__} takes keyword arguments only"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the program (callbacks, history and usage as in DSPy; see ``calling``)."""
        if args and self._keyword_only:
            raise CallError(self._positional_error())
        cls = type(self)  # _has_sync_forward() / _has_async_forward() without their frames
        forward = cls.forward
        if forward is not Module.forward or cls.aforward is Module.aforward:
            bound = self.forward
            if getattr(forward, "__dspex_checked__", False) and (
                getattr(bound, "__func__", None) is forward
            ):
                # the class's checked forward (not an instance's own), run as this call: the
                # check would pass, so the forward runs bare (a frame and a kwargs copy less)
                bare = forward.__wrapped__.__get__(self)
                return call_sync(self, bare, args, kwargs, checked=True)
            return call_sync(self, bound, args, kwargs)
        return call_sync(self, lambda *a, **k: run_sync(self.aforward(*a, **k)), args, kwargs)

    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        """Run the program from async code: ``aforward`` natively; a sync-only ``forward``
        runs in a worker thread so the event loop stays free (DSPy needs ``aforward``)."""
        return await acall_awaitable(self, args, kwargs)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("history", None)
        state.pop("callbacks", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("history", [])
        self.__dict__.setdefault("callbacks", [])

    def inspect_history(self, n: int = 1, file: TextIO | None = None) -> None:
        """Print the last ``n`` LM calls made under this module (DSPy's format)."""
        from dspex.utils.inspect_history import pretty_print_history

        pretty_print_history(self.history, n, file=file)

    def batch(
        self,
        examples: Sequence[Any],
        num_threads: int | None = None,
        max_errors: int | None = None,
        return_failed_examples: bool = False,
        provide_traceback: bool | None = None,
        disable_progress_bar: bool = False,
        timeout: float = 120,
        straggler_limit: int = 3,
        backend: str | None = None,
    ) -> Any:
        """Run the program on each example's inputs concurrently (``num_threads`` at a time).

        Returns the outputs in order (``None`` for a failed example); with
        ``return_failed_examples=True`` also the failed examples and their exceptions.
        Reaching ``max_errors`` failures stops the batch with an error. A program with a
        native ``aforward`` runs as tasks on one event loop; a sync one in worker threads.
        Once at most ``straggler_limit`` examples are left, one running ``timeout`` seconds
        or more is started again and the first attempt to finish counts (DSPy's rule).
        ``backend="process"``/``"ray"`` runs the calls on a pool of worker processes / Ray
        actors instead, ``num_threads`` at a time per worker (:mod:`dspex.pool.fanout`).
        """
        from dspex.primitives.batch import run_batch

        return run_batch(
            self,
            examples,
            num_threads=num_threads,
            max_errors=max_errors,
            return_failed_examples=return_failed_examples,
            provide_traceback=provide_traceback,
            timeout=timeout,
            straggler_limit=straggler_limit,
            backend=backend,
        )

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
        """Use ``lm`` in every module of this program that has parameters (its predictors)."""
        for _, param in self.named_parameters():
            if isinstance(param, Module):
                param.lm = lm  # type: ignore[attr-defined]

    def get_lm(self) -> Any:
        """The LM every predictor uses; an error if they use different ones."""
        lms = {id(lm): lm for lm in (getattr(p, "lm", None) for _, p in self.named_parameters())}
        if len(lms) == 1:
            return next(iter(lms.values()))
        raise CallError(
            "Multiple LMs are being used in the module. There's no unique LM to return."
        )

    def map_named_predictors(self: M, func: Any) -> M:
        """Replace each predictor by ``func(predictor)`` (at the same attribute path)."""
        for name, predictor in self.named_predictors():
            set_attribute_by_name(self, name, func(predictor))
        return self

    def __repr__(self) -> str:
        return "\n".join(f"{name} = {param}" for name, param in self.named_predictors())

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
                    raise StateKeyMissing(
                        f"saved state has no entry for parameter {name!r} "
                        f"(has: {sorted(k for k in state if k != 'metadata')})"
                    )
                param.load_state(state[name])

        apply(self.deepcopy())
        apply(self)
        return self

    def save(
        self,
        path: str | Path,
        save_program: bool = False,
        modules_to_serialize: Sequence[Any] | None = None,
    ) -> None:
        """Save the state to ``x.json`` (DSPy's JSON format, loadable by ``dspy`` 3.4.1) or
        ``x.pkl`` (cloudpickle), or with ``save_program=True`` the whole program (code and
        state, cloudpickle) into the directory ``path``, for :func:`dspex.load`."""
        path = Path(path)
        if save_program:
            from dspex.utils.saving import PICKLE_WARNING
            from dspex.utils.saving import save_program as save_whole

            logger.warning(PICKLE_WARNING)
            save_whole(self, path, modules_to_serialize, get_dependency_versions())
            return
        if path.suffix == ".json":
            state = self.dump_state()
            state["metadata"] = _metadata()
            try:
                blob = orjson.dumps(state, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
            except TypeError as exc:
                raise StateError(
                    f"Failed to save state to {path} with error: {exc}. Your DSPy program may "
                    "contain non json-serializable objects, please consider saving the state in "
                    ".pkl by using `path` ending with `.pkl`, or saving the whole program by "
                    "setting `save_program=True`."
                ) from exc
            path.write_bytes(blob)
        elif path.suffix == ".pkl":
            import cloudpickle

            from dspex.utils.saving import PICKLE_WARNING

            logger.warning(PICKLE_WARNING)
            state = self.dump_state(json_mode=False)
            state["metadata"] = _metadata()
            with open(path, "wb") as fh:
                cloudpickle.dump(state, fh)
        else:
            raise StateError(
                f"`path` must end with `.json` or `.pkl` when `save_program=False`, but received: {path}"
            )

    def load(
        self: M, path: str | Path, allow_pickle: bool = False, allow_unsafe_lm_state: bool = False
    ) -> M:
        """Load state saved by ``save`` (here or by ``dspy``): ``.json``, or ``.pkl`` with
        ``allow_pickle=True`` (a pickle runs code when loaded)."""
        path = Path(path)
        if path.suffix == ".json":
            try:
                state = orjson.loads(path.read_bytes())
            except orjson.JSONDecodeError as exc:
                raise StateError(f"{path} is not valid JSON: {exc}") from exc
        elif path.suffix == ".pkl":
            if not allow_pickle:
                raise StateError(
                    "Loading .pkl files can run arbitrary code, which may be dangerous. Set "
                    "`allow_pickle=True` to load this file."
                )
            import cloudpickle

            with open(path, "rb") as fh:
                state = cloudpickle.load(fh)
        else:
            raise StateError(f"`path` must end with `.json` or `.pkl`, but received: {path}")
        from dspex.utils.saving import warn_version_mismatch

        warn_version_mismatch((state.get("metadata") or {}).get("dependency_versions") or {})
        token = TRUSTED_LM_STATE.set(allow_unsafe_lm_state)  # read by Predict.load_state
        try:
            return self.load_state(state)
        finally:
            TRUSTED_LM_STATE.reset(token)


def _metadata() -> dict[str, Any]:
    # DSPy's loader compares each dependency_versions key with its own environment, so
    # only the keys it knows appear there; DSPex's own version sits beside them.
    from dspex import __version__

    return {"dependency_versions": get_dependency_versions(), "dspex_version": __version__}


_PATH_PART = re.compile(r"\.?(\w+)|\[(\d+)\]|\['([^']*)'\]")


ACALL = Module.acall
"""``Module``'s own ``acall``: a class whose ``acall`` is this one is called through
:func:`acall_awaitable` by a fan-out (no ``acall`` coroutine around each call)."""


def acall_awaitable(
    module: Module, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Coroutine[Any, Any, Any]:
    """What ``Module.acall(module, *args, **kwargs)`` awaits: the module call's coroutine,
    without the ``acall`` coroutine around it (``kwargs`` is not changed). A fan-out awaits it
    directly for a module whose class keeps :data:`ACALL`; its errors (a positional argument
    to a keyword-only module) are raised here, at once, instead of at the first await."""
    if args and module._keyword_only:
        raise CallError(module._positional_error())
    cls = type(module)
    if cls.aforward is not Module.aforward or cls.forward is Module.forward:
        return call_async(module, module.aforward, args, kwargs)
    from dspex.utils.asyncify import in_worker_thread

    run = functools.partial(forward_in_call, module, args, kwargs)
    return call_async(module, lambda *_a, **_k: in_worker_thread(run), args, kwargs)


def set_attribute_by_name(obj: Any, name: str, value: Any) -> None:
    """Set ``obj.<name>`` where ``name`` is a parameter path: ``a.b``, ``xs[0]``, ``d['k']``."""
    parts = [m.group(1) or m.group(2) or m.group(3) for m in _PATH_PART.finditer(name)]
    kinds = [
        "attr" if m.group(1) else ("index" if m.group(2) else "key")
        for m in _PATH_PART.finditer(name)
    ]
    target = obj
    for part, kind in list(zip(parts, kinds, strict=True))[:-1]:
        target = (
            getattr(target, part)
            if kind == "attr"
            else target[int(part) if kind == "index" else part]
        )
    last, kind = parts[-1], kinds[-1]
    if kind == "attr":
        setattr(target, last, value)
    else:
        target[int(last) if kind == "index" else last] = value
