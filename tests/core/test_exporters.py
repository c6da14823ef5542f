"""OpenTelemetry and Prometheus exporters fed by real DSPex calls (real SDKs, no mocks)."""

from __future__ import annotations

import pytest

import dspex
from dspex.testing import DummyLM


def _run_predict() -> None:
    dspex.Predict("question -> answer")(question="q", lm=DummyLM())


def test_otel_spans_for_timed_events_and_errors() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import StatusCode

    from dspex.telemetry import otel

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    handle = otel.instrument(provider)
    try:
        _run_predict()
        with pytest.raises(dspex.AdapterParseError):
            dspex.Predict("question -> answer: int")(
                question="q", lm=DummyLM(["no markers", "no json either"])
            )
    finally:
        assert otel.uninstrument(handle)
    spans = exporter.get_finished_spans()
    names = [s.name for s in spans]
    assert names.count("dspex.native.execute") == 2
    ok, failed = [s for s in spans if s.name == "dspex.native.execute"]
    assert ok.status.status_code != StatusCode.ERROR
    assert ok.attributes is not None and ok.attributes["dspex.module"] == "predict"
    assert ok.end_time is not None and ok.start_time is not None and ok.end_time > ok.start_time
    assert failed.status.status_code == StatusCode.ERROR
    _run_predict()  # detached: nothing more is exported
    assert len(exporter.get_finished_spans()) == len(spans)


def test_prometheus_metrics_count_time_and_errors() -> None:
    from prometheus_client import CollectorRegistry

    from dspex.telemetry import prometheus

    registry = CollectorRegistry()
    exporter = prometheus.instrument(registry)
    try:
        for _ in range(3):
            _run_predict()
        with pytest.raises(dspex.AdapterParseError):
            dspex.Predict("question -> answer: int")(
                question="q", lm=DummyLM(["no markers", "no json either"])
            )
    finally:
        exporter.close()
    labels = {"event": "dspex.native.execute", "implementation": "", "kind": "predict"}
    assert registry.get_sample_value("dspex_duration_seconds_count", labels) == 4
    assert registry.get_sample_value("dspex_duration_seconds_sum", labels) > 0
    stop = {**labels, "event": "dspex.native.execute.stop"}
    assert registry.get_sample_value("dspex_events_total", stop) == 3
    err = {**labels, "error": "AdapterParseError"}
    assert registry.get_sample_value("dspex_errors_total", err) == 1


def test_failing_handlers_never_break_calls(caplog: pytest.LogCaptureFixture) -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("exporter down")

    with dspex.telemetry.attached("dspex", broken):
        _run_predict()
    assert any("exporter down" in r.getMessage() or r.exc_info for r in caplog.records)
