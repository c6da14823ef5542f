"""OpenTelemetry export: DSPex's timed events become spans (``pip install 'dspex[otel]'``).

::

    from dspex.telemetry import otel
    handle = otel.instrument()            # the global tracer provider, or pass one
    ...
    otel.uninstrument(handle)

Every ``<name>.stop`` / ``<name>.exception`` event (they carry ``duration``) becomes a span
named ``<name>`` that ends now and started ``duration`` seconds ago, with the event's
metadata as attributes (scalars only) and an error status for exceptions. Events without a
duration (``dspex.router.route``, ``dspex.cache.hit``...) become events on the current span.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from dspex.errors import ConfigurationError
from dspex.telemetry.events import attach, detach

__all__ = ["instrument", "uninstrument"]

_SCALARS = (str, bool, int, float)


def _attributes(metadata: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in metadata.items():
        if isinstance(value, _SCALARS):
            out[f"dspex.{key}"] = value
        elif isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            out[f"dspex.{key}"] = list(value)
    return out


def instrument(tracer_provider: Any = None, *, prefix: str = "dspex") -> int:
    """Export events under ``prefix`` as OpenTelemetry spans; a handle for :func:`uninstrument`."""
    try:
        from opentelemetry import trace
        from opentelemetry.trace import Status, StatusCode
    except ImportError:  # pragma: no cover - exercised only without the extra
        raise ConfigurationError(
            "OpenTelemetry export needs the otel extra: pip install 'dspex[otel]'"
        ) from None
    tracer = trace.get_tracer("dspex", tracer_provider=tracer_provider)

    def handler(event: str, measurements: Mapping[str, float], metadata: Mapping[str, Any]) -> None:
        duration = measurements.get("duration")
        if duration is None:
            if not event.endswith(".start"):
                trace.get_current_span().add_event(event, _attributes(metadata))
            return
        name, _, outcome = event.rpartition(".")
        end = time.time_ns()
        span = tracer.start_span(
            name if outcome in ("stop", "exception") else event,
            start_time=end - int(duration * 1e9),
            attributes=_attributes(metadata),
        )
        if outcome == "exception":
            span.set_status(Status(StatusCode.ERROR, str(metadata.get("error", ""))))
        span.end(end_time=end)

    return attach(prefix, handler)


def uninstrument(handle: int) -> bool:
    """Stop exporting (the handle :func:`instrument` returned)."""
    return detach(handle)
