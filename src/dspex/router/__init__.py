"""Which implementation runs a module: ``native`` (DSPex's engine) or ``dspy`` (a DSPy worker).

The selection policy, in order: the explicit ``implementation=`` of the constructor; the
per-kind ``implementation_overrides`` setting; the global ``prefer_native`` preference
(``auto`` and ``native_first`` pick native where it exists, ``dspy_first`` picks DSPy); and
availability. Forcing an implementation a kind does not have raises
``ImplementationUnavailable`` naming the ones it has.
"""

from __future__ import annotations

from typing import Literal

from dspex import settings
from dspex.errors import ConfigurationError, ImplementationUnavailable
from dspex.telemetry import events

__all__ = ["Implementation", "choose"]

Implementation = Literal["native", "dspy"]
_CHOICES = ("native", "dspy", "auto", "compare")


def choose(
    kind: str,
    requested: str | None,
    *,
    native: bool = True,
    dspy: bool = True,
) -> Implementation:
    """The implementation to build for module ``kind`` (``native``/``dspy``: which exist)."""
    current = settings.current()
    source = "explicit"
    if requested is None:
        requested = current.implementation_overrides.get(kind)
        source = "override"
    if requested is None or requested == "auto":
        source = "preference" if requested is None else source
        prefer = current.prefer_native
        chosen: Implementation = "dspy" if prefer == "dspy_first" and dspy else "native"
        if chosen == "native" and not native:
            chosen = "dspy"
    elif requested in ("native", "dspy"):
        chosen = requested  # type: ignore[assignment]
    elif requested == "compare":
        raise ImplementationUnavailable(
            f"implementation='compare' is not available yet for {kind!r}; use 'native' or 'dspy'",
            kind=kind,
        )
    else:
        raise ConfigurationError(
            f"implementation must be one of {_CHOICES}, got {requested!r}", field="implementation"
        )
    available = {"native": native, "dspy": dspy}
    if not available[chosen]:
        others = [name for name, ok in available.items() if ok]
        raise ImplementationUnavailable(
            f"{kind!r} has no {chosen} implementation; available: {', '.join(others) or 'none'}",
            kind=kind,
            requested=chosen,
            available=others,
        )
    if events.has_handlers():
        events.emit(
            "dspex.router.route",
            {},
            {"kind": kind, "implementation": chosen, "source": source, "native_available": native},
        )
    return chosen
