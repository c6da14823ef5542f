"""Process-wide defaults and scoped overrides, as one small typed object.

``configure(**changes)`` replaces the process defaults (validated, thread-safe);
``context(**changes)`` overrides them for the current task/thread through a ContextVar and
restores them on exit. ``current()`` is what every component reads. Settings are immutable:
a change makes a new object, so a reader never sees a half-applied update.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import threading
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from dspex.errors import ConfigurationError

if TYPE_CHECKING:
    from dspex.adapters.base import Adapter
    from dspex.lm.base import BaseLM

__all__ = [
    "ENV_VARS",
    "Settings",
    "as_dict",
    "configure",
    "context",
    "current",
    "from_env",
    "get",
    "load",
    "pop_scope",
    "push_scope",
    "reset_defaults",
    "save",
    "scoped",
]

Preference = Literal["auto", "native_first", "dspy_first"]
RoutingStrategy = Literal["static", "performance"]
_PREFERENCES = ("auto", "native_first", "dspy_first")
_STRATEGIES = ("static", "performance")
_IMPLEMENTATIONS = ("native", "dspy", "auto", "compare")


def _default_cache_dir() -> Path:
    env = os.environ.get("DSPEX_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg) / "dspex" if xdg else Path.home() / ".cache" / "dspex"


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Everything DSPex reads from configuration. Build new ones with :meth:`replace`."""

    lm: BaseLM | None = None
    """The default language model for modules that are not given one."""
    adapter: Adapter | None = None
    """The default adapter (``None`` means ChatAdapter with JSONAdapter fallback)."""
    prefer_native: Preference = "auto"
    """Global implementation preference used when nothing more specific decides."""
    implementation_overrides: Mapping[str, str] = field(default_factory=dict)
    """Per module kind: ``{"react": "dspy"}``; values are native, dspy, auto or compare."""
    allow_fallback: bool = True
    """Fall back to the other implementation when one cannot serve a request."""
    routing_strategy: RoutingStrategy = "static"
    """``"performance"`` lets observed latency/error statistics drive the choice."""
    compare_sample_rate: float = 0.0
    """Fraction of calls run in compare mode (both implementations, divergence reported)."""
    pools: Mapping[str, Any] = field(default_factory=dict)
    """Worker-pool specs by name; validated by :mod:`dspex.pool` when a pool starts."""
    dspy_import_roots: tuple[str, ...] = ()
    """Extra top-level packages DSPy workers may import by path (your tools, pydantic types),
    besides ``dspy`` and ``dspex``; nothing else can be imported through the pool protocol."""
    allow_code_execution: tuple[str, ...] = ()
    """Code-running DSPy modules the DSPy workers may create (``["ProgramOfThought"]``, or
    ``True`` for all); their LM-generated code runs in :mod:`dspex.sandbox`. Read when the
    DSPy pool starts. Opting in is for trusted code only: never take it from a spec."""
    cache_dir: Path = field(default_factory=_default_cache_dir)
    """Root of on-disk caches (LM responses, DSPy's own cache in workers)."""
    track_usage: bool = False
    """Attach the token usage of each top-level program call to its ``Prediction``
    (``get_lm_usage()``), as DSPy's ``track_usage`` does; ``None`` there when off."""

    # --- DSPy's settings (``dspy.settings``), same names, defaults and meaning ---
    rm: Any = None
    """Default retriever for ``dspex.Retrieve``."""
    branch_idx: int = 0
    callbacks: Sequence[Any] = field(default_factory=list)
    """Global callbacks (:class:`dspex.utils.callback.BaseCallback`) for every module/LM call."""
    async_max_workers: int = 8
    send_stream: Any = None
    """The stream ``streamify`` sends chunks to (set by ``streamify`` itself)."""
    disable_history: bool = False
    """Do not record LM calls in ``lm.history`` and the global history."""
    usage_tracker: Any = None
    """The :class:`~dspex.lm.usage.UsageTracker` LM calls record into (``track_usage()``)."""
    caller_predict: Any = None
    caller_modules: Any = None
    stream_listeners: Sequence[Any] = field(default_factory=list)
    provide_traceback: bool = False
    """Include tracebacks in the error logs of ``batch``/``Parallel``/``Evaluate``."""
    num_threads: int = 8
    """Default concurrency of ``Module.batch``/``Parallel``."""
    max_errors: int = 10
    """Errors tolerated by ``batch``/``Parallel`` before they stop."""
    allow_tool_async_sync_conversion: bool = False
    max_history_size: int = 10000
    """Bound of the global LM history (``dspex.inspect_history``)."""
    trace: list[Any] | None = field(default_factory=list)
    """Where predictors record ``(predictor, inputs, prediction)`` for each call, as DSPy's
    ``settings.trace``: a process-wide list by default (bounded by ``max_trace_size``), a
    fresh one with ``with dspex.context(trace=[]) as s: ...; s.trace``, off with ``None``."""
    max_trace_size: int = 10000
    """The trace keeps at most this many entries (the oldest go first); 0 records nothing."""
    warn_on_type_mismatch: bool = True
    """Warn when a module input's type does not match its signature field's type."""
    interpreter_factory: Any = None
    fanout_backend: Literal["process", "ray"] | None = None
    """Where ``Evaluate`` and ``Module.batch`` run when they are not given ``backend=``:
    ``None`` in process, ``"process"`` on local worker processes, ``"ray"`` on Ray actors
    (:mod:`dspex.pool.fanout`); ``with dspex.context(fanout_backend="ray"):
    optimizer.compile(...)`` evaluates an optimizer's candidates on Ray."""

    def __post_init__(self) -> None:
        if self.prefer_native not in _PREFERENCES:
            raise ConfigurationError(
                f"prefer_native must be one of {_PREFERENCES}, got {self.prefer_native!r}"
            )
        if self.routing_strategy not in _STRATEGIES:
            raise ConfigurationError(
                f"routing_strategy must be one of {_STRATEGIES}, got {self.routing_strategy!r}"
            )
        if not 0.0 <= float(self.compare_sample_rate) <= 1.0:
            raise ConfigurationError(
                f"compare_sample_rate must be within [0, 1], got {self.compare_sample_rate!r}"
            )
        for kind, impl in dict(self.implementation_overrides).items():
            if impl not in _IMPLEMENTATIONS:
                raise ConfigurationError(
                    f"implementation_overrides[{kind!r}] must be one of {_IMPLEMENTATIONS}, "
                    f"got {impl!r}"
                )
        if self.fanout_backend not in (None, "process", "ray"):
            raise ConfigurationError(
                f"fanout_backend must be None, 'process' or 'ray', got {self.fanout_backend!r}",
                field="fanout_backend",
            )
        if self.trace is not None and not isinstance(self.trace, list):
            raise ConfigurationError(
                f"trace must be a list or None, got {type(self.trace).__name__}"
            )
        if not isinstance(self.max_trace_size, int) or self.max_trace_size < 0:
            raise ConfigurationError(
                f"max_trace_size must be a non-negative integer, got {self.max_trace_size!r}"
            )
        roots = self.dspy_import_roots
        if isinstance(roots, str) or not all(
            isinstance(r, str) and r.isidentifier() for r in roots
        ):
            raise ConfigurationError(
                f"dspy_import_roots must be a sequence of top-level package names, got {roots!r}"
            )
        object.__setattr__(self, "dspy_import_roots", tuple(roots))
        if self.allow_code_execution != ():  # the default needs no check (every context())
            from dspex.code_execution import parse_code_opt_in

            opt_in = parse_code_opt_in(self.allow_code_execution)
            object.__setattr__(self, "allow_code_execution", opt_in)

        for name in _POSITIVE_INTS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigurationError(
                    f"{name} must be a non-negative integer, got {value!r}", field=name
                )
        if not isinstance(self.callbacks, Sequence) or isinstance(self.callbacks, str):
            raise ConfigurationError(
                f"callbacks must be a list of callback objects, got {self.callbacks!r}",
                field="callbacks",
            )
        if not isinstance(self.cache_dir, Path):
            object.__setattr__(self, "cache_dir", Path(self.cache_dir))

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied; unknown names raise :class:`ConfigurationError`."""
        unknown = sorted(set(changes) - _FIELD_NAMES)
        if unknown:
            raise ConfigurationError(
                f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(_FIELD_NAMES))}"
            )
        return dataclasses.replace(self, **changes)


_FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(Settings))
_POSITIVE_INTS = (
    "branch_idx",
    "async_max_workers",
    "num_threads",
    "max_errors",
    "max_history_size",
    "max_trace_size",
)

ENV_VARS: dict[str, str] = {
    "DSPEX_PREFER_NATIVE": "prefer_native",
    "DSPEX_IMPLEMENTATION_OVERRIDES": "implementation_overrides",
    "DSPEX_ALLOW_FALLBACK": "allow_fallback",
    "DSPEX_ROUTING_STRATEGY": "routing_strategy",
    "DSPEX_COMPARE_SAMPLE_RATE": "compare_sample_rate",
    "DSPEX_DSPY_IMPORT_ROOTS": "dspy_import_roots",
    "DSPEX_TRACK_USAGE": "track_usage",
}
"""Environment variables read into the process defaults (``DSPEX_CACHE_DIR`` too)."""


def _env_bool(name: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{name} must be true or false, got {text!r}", field=name)


def from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Settings changes from ``DSPEX_*`` environment variables (validated, typed).

    ``DSPEX_IMPLEMENTATION_OVERRIDES`` is ``kind=impl,kind=impl`` (or a JSON object);
    ``DSPEX_DSPY_IMPORT_ROOTS`` a comma-separated list.
    """
    env = os.environ if environ is None else environ
    changes: dict[str, Any] = {}
    for name, setting in ENV_VARS.items():
        text = env.get(name)
        if text is None or not text.strip():
            continue
        value: Any = text.strip()
        if setting in ("allow_fallback", "track_usage"):
            value = _env_bool(name, text)
        elif setting == "compare_sample_rate":
            try:
                value = float(text)
            except ValueError:
                raise ConfigurationError(
                    f"{name} must be a number in [0, 1], got {text!r}", field=name
                ) from None
        elif setting == "dspy_import_roots":
            value = tuple(r.strip() for r in text.split(",") if r.strip())
        elif setting == "implementation_overrides":
            value = _parse_overrides(name, text)
        changes[setting] = value
    try:
        Settings(**changes)
    except ConfigurationError as exc:
        raise ConfigurationError(f"from the environment: {exc.message}", field="env") from None
    return changes


def _parse_overrides(name: str, text: str) -> dict[str, str]:
    text = text.strip()
    if text.startswith("{"):
        import json

        try:
            parsed = json.loads(text)
        except ValueError as exc:
            raise ConfigurationError(f"{name} is not valid JSON: {exc}", field=name) from None
        if not isinstance(parsed, dict):
            raise ConfigurationError(f"{name} must be a JSON object", field=name)
        return {str(k): str(v) for k, v in parsed.items()}
    out: dict[str, str] = {}
    for part in text.split(","):
        kind, sep, impl = part.partition("=")
        if not sep or not kind.strip() or not impl.strip():
            raise ConfigurationError(
                f"{name} must look like 'react=dspy,predict=native', got {text!r}", field=name
            )
        out[kind.strip()] = impl.strip()
    return out


_lock = threading.Lock()
_defaults: Settings | None = None
_scoped: ContextVar[Settings | None] = ContextVar("dspex_settings", default=None)


def _initial() -> Settings:
    global _defaults
    with _lock:
        if _defaults is None:
            _defaults = Settings(**from_env())
        return _defaults


def current() -> Settings:
    """The settings in force here: the innermost ``context()``, else the process defaults."""
    scoped = _scoped.get()
    if scoped is not None:
        return scoped
    return _defaults if _defaults is not None else _initial()


# Hot-path accessors (a module call, a Predict call, the callbacks check): the bound methods of
# the context variable itself, so reading or scoping the settings costs no Python frame.
scoped: Callable[[], Settings | None] = _scoped.get
"""The innermost ``context()``'s settings, or ``None`` outside every one:
``scoped() or current()`` is :func:`current` without a Python frame inside a ``context()``."""
push_scope: Callable[[Settings], Token[Settings | None]] = _scoped.set
"""Put ``settings`` in force for this task/thread (what ``context()`` does, as a plain call);
undo with :func:`pop_scope` and the token it returns."""
pop_scope: Callable[[Token[Settings | None]], None] = _scoped.reset
"""Undo one :func:`push_scope`."""


def configure(**changes: Any) -> None:
    """Change the process-wide defaults, e.g. ``dspex.configure(lm=dspex.LM(...))``."""
    global _defaults
    base = _initial()
    with _lock:
        _defaults = base.replace(**changes)


def reset_defaults() -> None:
    """Restore the built-in defaults (and the ``DSPEX_*`` environment variables), and the
    cache tiers ``configure_cache`` switched."""
    global _defaults
    with _lock:
        _defaults = None
    cache = sys.modules.get("dspex.lm.cache")
    if cache is not None:
        cache.set_tiers()


@contextmanager
def context(**changes: Any) -> Iterator[Settings]:
    """Override settings for the enclosed block (this thread / asyncio task only)."""
    token = _scoped.set(current().replace(**changes))
    try:
        yield current()
    finally:
        _scoped.reset(token)


# --- ``dspex.settings`` as DSPy users write it -------------------------------------------
# ``dspex.settings.lm``, ``dspex.settings.configure(...)``, ``with dspex.settings.context(...)``,
# ``dspex.settings["trace"]``, ``"lm" in dspex.settings``: this module answers for the typed
# ``current()`` object, so there is one source of truth and no untyped global dict.


def __getattr__(name: str) -> Any:
    if name == "caller_modules":  # the live stack of running module calls
        from dspex.utils.inspect_history import CALLERS

        stack = CALLERS.get()
        return list(stack) if stack else current().caller_modules
    if name in _FIELD_NAMES:
        return getattr(current(), name)
    raise AttributeError(
        f"dspex.settings has no setting {name!r}; known: {', '.join(sorted(_FIELD_NAMES))}"
    )


def get(name: str, default: Any = None) -> Any:
    """``dspy.settings.get(name, default)``."""
    return getattr(current(), name) if name in _FIELD_NAMES else default


def as_dict() -> dict[str, Any]:
    """Every setting in force here, by name (DSPy's ``settings.config``/``settings.copy()``)."""
    now = current()
    return {name: getattr(now, name) for name in sorted(_FIELD_NAMES)}


def save(
    path: str | os.PathLike[str],
    modules_to_serialize: Sequence[Any] | None = None,
    exclude_keys: Sequence[str] | None = None,
) -> None:
    """Pickle the settings in force to ``path`` with cloudpickle (DSPy's ``settings.save``).

    Loading runs code from the file: :func:`load` needs ``allow_pickle=True``.
    """
    import cloudpickle

    logging.getLogger(__name__).warning(
        "`dspy.settings` are serialized using cloudpickle. Because cloudpickle allows for the "
        "execution of arbitrary code during deserialization, you should only load files from "
        "verified sources within a trusted environment."
    )
    excluded = set(exclude_keys or ())
    data = {k: v for k, v in as_dict().items() if k not in excluded}
    for module in modules_to_serialize or ():
        cloudpickle.register_pickle_by_value(module)
    try:
        with open(path, "wb") as fh:
            cloudpickle.dump(data, fh)
    except Exception as exc:
        raise ConfigurationError(
            f"Saving failed with error: {exc}. Please remove the non-picklable attributes from "
            "the values in the `dspy.settings`."
        ) from exc
    finally:
        for module in modules_to_serialize or ():
            cloudpickle.unregister_pickle_by_value(module)


def load(path: str | os.PathLike[str], allow_pickle: bool = False) -> dict[str, Any]:
    """Settings saved by :func:`save`, as a dict (pass it to ``configure(**...)``)."""
    if not allow_pickle:
        raise ConfigurationError(
            "Loading .pkl files can run arbitrary code, which may be dangerous. "
            "Set `allow_pickle=True` if you trust the source of the file.",
            field="allow_pickle",
        )
    import cloudpickle

    with open(path, "rb") as fh:
        data: dict[str, Any] = cloudpickle.load(fh)
    return data


class _SettingsModule(types.ModuleType):
    """Item access, ``in`` and attribute assignment (``dspex.settings.lm = lm`` configures)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _FIELD_NAMES:
            configure(**{name: value})
        else:
            super().__setattr__(name, value)

    def __getitem__(self, name: str) -> Any:
        if name not in _FIELD_NAMES:
            raise KeyError(name)
        return getattr(current(), name)

    def __setitem__(self, name: str, value: Any) -> None:
        configure(**{name: value})

    def __contains__(self, name: object) -> bool:
        return name in _FIELD_NAMES

    @property
    def config(self) -> dict[str, Any]:
        return as_dict()

    def copy(self) -> dict[str, Any]:
        return as_dict()

    def __repr__(self) -> str:
        return f"dspex.settings({as_dict()!r})"


sys.modules[__name__].__class__ = _SettingsModule
