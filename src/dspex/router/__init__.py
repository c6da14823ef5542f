"""Which implementation runs a module: ``native`` (DSPex's engine) or ``dspy`` (a DSPy worker).

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
from typing import TYPE_CHECKING, Any, Literal

from dspex import settings
from dspex.errors import ConfigurationError, ImplementationUnavailable
from dspex.router.kinds import _REGISTRY as REGISTRY
from dspex.router.kinds import Registry, register_native, registry
from dspex.telemetry import events

if TYPE_CHECKING:
    from dspex.primitives.module import Module

__all__ = [
    "REGISTRY",
    "Choice",
    "Registry",
    "choose",
    "construct",
    "explain",
    "module",
    "register_native",
    "registry",
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


def choose(kind: str, requested: str | None = None) -> Choice:
    """The implementation to build for module ``kind`` (emits ``dspex.router.route``)."""
    chosen, source, _ = _decide(kind, requested)
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
    return chosen


def explain(kind: str) -> tuple[str | None, str]:
    """``(default implementation, why)`` for ``kind`` now (``None`` if it cannot be built)."""
    try:
        chosen, _, reason = _decide(kind, None)
    except ImplementationUnavailable as exc:
        return None, exc.message
    return chosen, reason


# ---------------------------------------------------------------------------- building


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


def construct(cls: type[Module], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Module:
    """Build ``cls(*args, **kwargs)`` where the router says (``Predict`` and friends)."""
    kind: str = cls.__dict__["_dspex_kind"]
    requested = kwargs.pop("implementation", None)
    chosen = choose(kind, requested)
    if chosen != "dspy":
        reason = native_unsupported(args, kwargs)
        if reason is not None:
            chosen = _fall_back(kind, requested, reason)
    if chosen == "dspy":
        from dspex.bridge.remote import RemoteModule

        return RemoteModule(cls.__dict__["_dspy_target"], *args, **kwargs)
    native = _make_native(cls, args, kwargs)
    if chosen == "compare":
        from dspex.bridge.remote import RemoteModule
        from dspex.router.compare import CompareModule

        remote = RemoteModule(cls.__dict__["_dspy_target"], *args, **kwargs)
        rate = 1.0 if requested == "compare" else settings.current().compare_sample_rate
        return CompareModule(kind, native, remote, sample_rate=rate)
    _measure(native, kind, "native")
    return native


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


def _make_native(cls: type[Module], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Module:
    from dspex.primitives.module import build_native

    native: Module = build_native(cls, args, kwargs)
    return native


def _measure(module: Module, kind: str, implementation: str) -> None:
    if settings.current().routing_strategy == "performance":
        object.__setattr__(module, "_dspex_measure", (kind, implementation))


def module(kind: str, *args: Any, implementation: str | None = None, **kwargs: Any) -> Module:
    """Build a module of ``kind`` (``"react"``, ``"best_of_n"``...) where the router says.

    ``dspex.ReAct(...)``, ``dspex.BestOfN(...)`` and the other DSPy names are this function
    for their kind, so ``import dspex as dspy`` programs run unchanged.
    """
    entry = REGISTRY.entry(kind)
    native_cls = REGISTRY.native_class(kind) if entry.native else None
    if native_cls is not None and "_dspy_target" in getattr(native_cls, "__dict__", {}):
        # routed classes (Predict, ChainOfThought) decide in their constructor
        return native_cls(*args, implementation=implementation, **kwargs)  # type: ignore[no-any-return]
    chosen = choose(kind, implementation)
    if chosen != "dspy" and native_cls is not None:
        built: Module = native_cls(*args, **kwargs)
        if chosen == "compare":
            from dspex.bridge.remote import RemoteModule
            from dspex.router.compare import CompareModule

            assert entry.dspy is not None
            remote = RemoteModule(entry.dspy, *args, **kwargs)
            rate = 1.0 if implementation == "compare" else settings.current().compare_sample_rate
            return CompareModule(kind, built, remote, sample_rate=rate)
        _measure(built, kind, "native")
        return built
    from dspex.bridge.remote import RemoteModule

    assert entry.dspy is not None
    remote_module = RemoteModule(entry.dspy, *args, **kwargs)
    _measure(remote_module, kind, "dspy")
    return remote_module
