"""Prometheus metrics from DSPex's events (``pip install 'dspex[prometheus]'``).

::

    from dspex.telemetry import prometheus
    exporter = prometheus.instrument()        # registers on prometheus_client's default registry
    prometheus_client.start_http_server(9464)  # or expose exporter.registry your own way

Metrics (labels: ``event``, ``implementation``, ``kind``):

- ``dspex_events_total`` — every event (throughput);
- ``dspex_duration_seconds`` — a histogram of each timed event (``*.stop``/``*.exception``);
- ``dspex_errors_total`` — failed timed events (``*.exception``), with ``error``.

Label values come from event metadata (``implementation``, ``kind`` or ``module``), so their
number stays bounded by the module kinds in use.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dspex.errors import ConfigurationError
from dspex.telemetry.events import attach, detach

__all__ = ["PrometheusExporter", "instrument"]

_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
)


@dataclass
class PrometheusExporter:
    """The registered metrics and the telemetry handle feeding them."""

    registry: Any
    events: Any
    durations: Any
    errors: Any
    handle: int

    def close(self) -> None:
        """Stop feeding the metrics (they stay registered)."""
        detach(self.handle)


def _labels(event: str, metadata: Mapping[str, Any]) -> tuple[str, str, str]:
    implementation = metadata.get("implementation") or ""
    kind = metadata.get("kind") or metadata.get("module") or ""
    return event, str(implementation), str(kind)


def instrument(registry: Any = None, *, prefix: str = "dspex") -> PrometheusExporter:
    """Feed Prometheus metrics from events under ``prefix`` (``registry``: default registry)."""
    try:
        import prometheus_client as prom
    except ImportError:  # pragma: no cover - exercised only without the extra
        raise ConfigurationError(
            "Prometheus export needs the prometheus extra: pip install 'dspex[prometheus]'"
        ) from None
    registry = registry if registry is not None else prom.REGISTRY
    labels = ("event", "implementation", "kind")
    events = prom.Counter("dspex_events", "DSPex events", labels, registry=registry)
    durations = prom.Histogram(
        "dspex_duration_seconds", "Duration of timed DSPex events", labels,
        buckets=_BUCKETS, registry=registry,
    )  # fmt: skip
    errors = prom.Counter("dspex_errors", "DSPex failures", (*labels, "error"), registry=registry)

    def handler(event: str, measurements: Mapping[str, float], metadata: Mapping[str, Any]) -> None:
        base = event.rpartition(".")[0] if event.endswith((".stop", ".exception")) else event
        key = _labels(base, metadata)
        events.labels(*_labels(event, metadata)).inc()
        duration = measurements.get("duration")
        if duration is not None:
            durations.labels(*key).observe(duration)
        if event.endswith(".exception"):  # (its dspex.error.* twin is not counted again)
            errors.labels(*key, str(metadata.get("error") or event.rpartition(".")[2])).inc()

    handle = attach(prefix, handler)
    return PrometheusExporter(registry, events, durations, errors, handle)
