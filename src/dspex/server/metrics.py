"""Prometheus metrics of one server, on its own registry (``GET /metrics``).

- ``dspex_server_requests_total{program, status}`` — finished calls by HTTP status;
- ``dspex_server_request_duration_seconds{program}`` — call latency histogram;
- ``dspex_server_in_flight`` / ``dspex_server_queued`` — calls running / waiting for a slot;
- ``dspex_server_tokens_total{program, model, kind}`` — LM tokens the calls used;
- with ``event_metrics=True``, DSPex's own event metrics too (``dspex_events_total``,
  ``dspex_duration_seconds``..., see :mod:`dspex.telemetry.prometheus`) on the same
  registry. Off by default: they turn on telemetry spans in every module call, which costs
  CPU on a busy server.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["ServerMetrics"]


class ServerMetrics:
    """The server's collectors; ``render()`` is the text exposition format."""

    def __init__(
        self, stats: Callable[[], Mapping[str, Any]], *, event_metrics: bool = False
    ) -> None:
        try:
            import prometheus_client as prom
        except ImportError:  # pragma: no cover - the server extra installs it
            from dspex.errors import ConfigurationError

            raise ConfigurationError(
                "dspex serve needs the server extra: pip install 'dspex[server]'"
            ) from None
        from dspex.telemetry.prometheus import instrument

        self._prom = prom
        self.registry = prom.CollectorRegistry()
        self.requests = prom.Counter(
            "dspex_server_requests",
            "Program calls finished, by HTTP status.",
            ["program", "status"],
            registry=self.registry,
        )
        self.duration = prom.Histogram(
            "dspex_server_request_duration_seconds",
            "Program call latency (admission to response).",
            ["program"],
            registry=self.registry,
        )
        self.tokens = prom.Counter(
            "dspex_server_tokens",
            "LM tokens used by program calls.",
            ["program", "model", "kind"],
            registry=self.registry,
        )
        in_flight = prom.Gauge(
            "dspex_server_in_flight", "Calls running now.", registry=self.registry
        )
        queued = prom.Gauge(
            "dspex_server_queued", "Calls waiting for a slot.", registry=self.registry
        )
        in_flight.set_function(lambda: float(stats()["in_flight"]))
        queued.set_function(lambda: float(stats()["queued"]))
        self.exporter = instrument(self.registry) if event_metrics else None

    def observe(
        self, program: str, status: int, seconds: float, usage: Mapping[str, Any] | None
    ) -> None:
        self.requests.labels(program, str(status)).inc()
        self.duration.labels(program).observe(seconds)
        for model, counts in (usage or {}).items():
            if not isinstance(counts, Mapping):
                continue
            for kind in ("prompt_tokens", "completion_tokens"):
                value = counts.get(kind)
                if isinstance(value, int | float) and value > 0:
                    self.tokens.labels(program, str(model), kind).inc(value)

    def render(self) -> tuple[bytes, str]:
        return self._prom.generate_latest(self.registry), self._prom.CONTENT_TYPE_LATEST

    def close(self) -> None:
        if self.exporter is not None:
            self.exporter.close()
