"""Which implementation runs a module: ``native`` (DSPex's engine) or ``dspy`` (a DSPy worker).

The router decides once, at the front door: :func:`build` (``dspex.module``, ``dspex.Predict``,
``dspex.ReAct``..., pipeline steps named by DSPy path and ``to_native()`` all come here) picks an
implementation, builds it, and wraps it for the behaviours that need it (compare mode,
performance measurement, call-time fallback: :mod:`dspex.router.wrappers`). Engine classes are
plain: a native module never routes its children.

The selection policy, in order:

1. the explicit ``implementation=`` of the constructor (``native``, ``dspy``, ``auto``,
   ``compare``);
2. the per-kind ``implementation_overrides`` setting (``{"react": "dspy"}``);
3. with ``routing_strategy="performance"``, observed latency and errors of both (for
   ``auto`` kinds that have both);
4. the global ``prefer_native`` preference: ``auto`` and ``native_first`` pick native where
   it exists, ``dspy_first`` picks DSPy where it exists;
5. availability: a kind with only one implementation gets that one.

Forcing an implementation a kind does not have raises ``ImplementationUnavailable`` naming
the ones it has. With ``allow_fallback`` (the default), a native module asked for something
it does not support (e.g. a DSPy signature class or DSPy-only field types) is built on DSPy
instead and the ``dspex.router.fallback`` event says why. ``compare_sample_rate`` runs that
fraction of calls of routed kinds on both implementations (see :mod:`dspex.router.compare`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from dspex import settings
from dspex.errors import ConfigurationError, ImplementationUnavailable
from dspex.router.kinds import _REGISTRY as REGISTRY
from dspex.router.kinds import Entry, Registry, register_native, registry
from dspex.telemetry import events

if TYPE_CHECKING:
    from dspex.primitives.module import Module

__all__ = [
    "REGISTRY",
    "Choice",
    "Registry",
    "Route",
    "build",
    "choose",
    "dspy",
    "explain",
    "module",
    "realize",
    "register_native",
    "registry",
    "route",
]

logger = logging.getLogger(__name__)

Choice = Literal["native", "dspy", "compare"]
_CHOICES = ("native", "dspy", "auto", "compare")


def _decide(kind: str, requested: str | None) -> tuple[Choice, str, str]:
    """``(implementation, source, reason)`` for ``kind`` under the current settings."""
    current = settings.current()
    native, dspy = REGISTRY.has_native(kind), REGISTRY.has_dspy(kind)
    source = "explicit"
    if requested is None:
        requested = current.implementation_overrides.get(kind)
        source = "override" if requested is not None else "preference"
    if requested not in (None, *_CHOICES):
        raise ConfigurationError(
            f"implementation must be one of {_CHOICES}, got {requested!r}", field="implementation"
        )
    if requested in ("native", "dspy", "compare"):
        wanted = requested
        missing = [name for name, ok in (("native", native), ("dspy", dspy)) if not ok]
        if wanted in missing or (wanted == "compare" and missing):
            have = [name for name in ("native", "dspy") if name not in missing]
            raise ImplementationUnavailable(
                f"{kind!r} has no {' or '.join(missing)} implementation, so "
                f"implementation={wanted!r} cannot be served; available: "
                f"{', '.join(have) or 'none'}",
                kind=kind,
                requested=wanted,
                available=have,
            )
        return wanted, source, f"{source} implementation={wanted!r}"  # type: ignore[return-value]
    if not native and not dspy:
        hint = (
            "install the dspy extra: pip install 'dspex[dspy]'"
            if REGISTRY.entry(kind).dspy
            else "register one with dspex.register_native()"
        )
        raise ImplementationUnavailable(
            f"{kind!r} has no implementation here ({hint})", kind=kind, available=[]
        )
    if not native:
        return "dspy", "availability", "no native implementation"
    if not dspy:
        return "native", "availability", "native only"
    if current.compare_sample_rate > 0 and requested is None:
        return (
            "compare",
            "compare_sample_rate",
            f"compare on {current.compare_sample_rate:.0%} of calls",
        )
    if current.routing_strategy == "performance" and current.prefer_native == "auto":
        from dspex.router.stats import STATS

        picked = STATS.pick(kind)
        if picked is not None:
            return picked, "performance", "observed latency and errors"
    if current.prefer_native == "dspy_first":
        return "dspy", source, "prefer_native='dspy_first'"
    return (
        "native",
        source,
        f"native implementation available (prefer_native={current.prefer_native!r})",
    )


@dataclass(frozen=True, slots=True)
class Route:
    """One routing decision: what to build for ``kind`` and why."""

    entry: Entry
    implementation: Choice
    source: str
    reason: str
    requested: str | None

    @property
    def kind(self) -> str:
        return self.entry.kind


def route(
    kind: str,
    requested: str | None = None,
    args: tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
) -> Route:
    """Decide the implementation of ``kind`` for these constructor arguments.

    The only place a choice is made. Emits exactly one ``dspex.router.route`` event, with the
    final decision (after a creation-time fallback to DSPy for arguments native cannot take).
    """
    chosen, source, reason = _decide(kind, requested)
    if chosen != "dspy":
        unsupported = native_unsupported(args, kwargs or {})
        if unsupported is not None:
            chosen, source, reason = (
                _fall_back(kind, requested, unsupported),
                "fallback",
                unsupported,
            )
    if events.has_handlers():
        events.emit(
            "dspex.router.route",
            {},
            {
                "operation": "create",
                "kind": kind,
                "implementation": chosen,
                "source": source,
                "native_available": REGISTRY.has_native(kind),
            },
        )
    return Route(REGISTRY.entry(kind), chosen, source, reason, requested)


def choose(kind: str, requested: str | None = None) -> Choice:
    """The implementation :func:`build` would pick for ``kind`` now (emits the route event)."""
    return route(kind, requested).implementation


def explain(kind: str) -> tuple[str | None, str]:
    """``(default implementation, why)`` for ``kind`` now (``None`` if it cannot be built)."""
    try:
        chosen, _, reason = _decide(kind, None)
    except ImplementationUnavailable as exc:
        return None, exc.message
    return chosen, reason


# ---------------------------------------------------------------------------- building


def build(kind: str, *args: Any, implementation: str | None = None, **kwargs: Any) -> Module:
    """Build a module of ``kind`` (``"predict"``, ``"react"``...) where the router says.

    ``dspex.module(kind, ...)``; ``dspex.Predict(...)``, ``dspex.ReAct(...)`` and the other
    DSPy names call this for their kind, so ``import dspex as dspy`` programs run unchanged.
    """
    return realize(route(kind, implementation, args, kwargs), args, kwargs)


module = build
"""``dspex.module(kind, *args, implementation=None, **kwargs)``: :func:`build`."""


def dspy(
    target: str,
    *args: Any,
    session: Any = None,
    rehydrate: bool = True,
    **kwargs: Any,
) -> Module:
    """Any DSPy class, hosted in a worker: ``dspex.dspy("dspy.ReAct", "q -> a", tools=[f])``.

    ``target`` is an import path (``"dspy.ReAct"``, or ``"mypkg.programs:MyProgram"`` for a
    package allowed by ``dspy_import_roots``). Arguments may include signatures, examples,
    pydantic types, native or remote modules and Python callables (tools, metrics): callables
    the worker cannot import become callbacks into this process. The object is created on
    first use; with ``rehydrate=True`` it is rebuilt (constructor + last state) if its worker
    dies, otherwise its next call raises ``SessionLost``. A DSPy class that is a module kind
    (``dspy.Predict``...) is built through :func:`build` with ``implementation="dspy"``, so
    the router's wrappers (call-time fallback) apply as for ``dspex.Predict(...)``.
    """
    from dspex.bridge.remote import RemoteModule
    from dspex.errors import UserError

    if not isinstance(target, str):
        raise UserError(f"dspex.dspy() takes an import path such as 'dspy.ReAct', got {target!r}")
    options = {"session": session, "rehydrate": rehydrate}
    entry = REGISTRY.by_dspy(target)
    if entry is not None:
        return build(entry.kind, *args, implementation="dspy", **options, **kwargs)
    return RemoteModule(target, *args, **options, **kwargs)


def realize(decision: Route, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Module:
    """Build what ``decision`` says, wrapped for the router behaviours that apply."""
    from dspex.router import wrappers

    entry, chosen = decision.entry, decision.implementation
    built: Module
    if chosen == "dspy":
        built = _remote(entry, args, kwargs)
    else:
        built = REGISTRY.native_class(entry.kind)(*args, **kwargs)
        if chosen == "compare":
            from dspex.router.compare import CompareModule

            rate = (
                1.0 if decision.requested == "compare" else settings.current().compare_sample_rate
            )
            return CompareModule(
                entry.kind, built, _remote(entry, args, kwargs, fallback=False), sample_rate=rate
            )
    if settings.current().routing_strategy == "performance":
        built = wrappers.MeasuredModule(entry.kind, built, chosen)
    return built


def _remote(
    entry: Entry, args: tuple[Any, ...], kwargs: dict[str, Any], *, fallback: bool = True
) -> Module:
    from dspex.bridge.remote import RemoteModule
    from dspex.router.wrappers import FallbackModule

    assert entry.dspy is not None
    remote = RemoteModule(entry.dspy, *args, **kwargs)
    if fallback and entry.state_compatible and entry.native is not None:
        return FallbackModule(entry.kind, remote)
    return remote


def _foreign(value: Any) -> str | None:
    """A reason the native engine cannot take ``value`` (a DSPy object), or ``None``."""
    for owner in (type(value), value) if isinstance(value, type) else (type(value),):
        module = str(getattr(owner, "__module__", ""))
        if module == "dspy" or module.startswith("dspy."):
            return f"a DSPy object ({module}.{owner.__qualname__}) was passed"
    fields = getattr(value, "fields", None) if isinstance(value, type) else None
    if isinstance(fields, dict):
        for name, info in fields.items():
            annotation = getattr(info, "annotation", None)
            reason = _foreign(annotation) if isinstance(annotation, type) else None
            if reason:
                return f"field {name!r} has a DSPy-only type: {reason}"
    return None


def native_unsupported(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """Why the native engine cannot build a module from these arguments (``None``: it can)."""
    for value in (*args, *kwargs.values()):
        reason = _foreign(value)
        if reason:
            return reason
    return None


def _fall_back(kind: str, requested: str | None, reason: str) -> Choice:
    current = settings.current()
    if requested == "native" or not current.allow_fallback:
        raise ImplementationUnavailable(
            f"the native {kind!r} cannot serve this: {reason}; use implementation='dspy'"
            + ("" if current.allow_fallback else " or allow_fallback=True"),
            kind=kind,
            reason=reason,
        )
    if not REGISTRY.has_dspy(kind):
        raise ImplementationUnavailable(
            f"the native {kind!r} cannot serve this ({reason}) and DSPy is not installed",
            kind=kind,
            reason=reason,
        )
    logger.info("dspex: %s falls back to dspy at creation: %s", kind, reason)
    events.emit(
        "dspex.router.fallback",
        {},
        {"kind": kind, "from": "native", "to": "dspy", "when": "create", "reason": reason},
    )
    return "dspy"
