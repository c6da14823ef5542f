from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pytest

from dspex import telemetry


def test_prefix_matching_and_detach() -> None:
    got: list[str] = []

    def handler(event: str, m: Mapping[str, float], md: Mapping[str, Any]) -> None:
        got.append(event)

    handle = telemetry.attach("dspex.lm", handler)
    telemetry.emit("dspex.lm.request", {"duration": 1.0})
    telemetry.emit("dspex.lmx.other")
    telemetry.emit("dspex.pool.checkout")
    assert telemetry.detach(handle)
    telemetry.emit("dspex.lm.request")
    assert got == ["dspex.lm.request"]
    assert not telemetry.detach(handle)


def test_span_emits_start_stop_and_exception() -> None:
    with telemetry.capture("dspex.test") as cap:
        with telemetry.span("dspex.test.op", {"k": 1}) as meta:
            meta["extra"] = 2
        with pytest.raises(RuntimeError), telemetry.span("dspex.test.fail"):
            raise RuntimeError("x")
    assert cap.names() == [
        "dspex.test.op.start",
        "dspex.test.op.stop",
        "dspex.test.fail.start",
        "dspex.test.fail.exception",
    ]
    stop = cap.named("dspex.test.op.stop")[0]
    assert stop[1]["duration"] >= 0 and stop[2] == {"k": 1, "extra": 2}
    assert cap.named("dspex.test.fail.exception")[0][2]["error"] == "RuntimeError"


def test_failing_handler_never_breaks_the_caller(caplog: pytest.LogCaptureFixture) -> None:
    def bad(event: str, m: Mapping[str, float], md: Mapping[str, Any]) -> None:
        raise ValueError("handler bug")

    with caplog.at_level(logging.ERROR, logger="dspex.telemetry"), telemetry.attached("", bad):
        telemetry.emit("dspex.anything")
    assert "handler bug" in caplog.text


def test_attach_rejects_non_callables() -> None:
    from dspex.errors import ConfigurationError

    with pytest.raises(ConfigurationError):
        telemetry.attach("x", "not callable")  # type: ignore[arg-type]


def test_attached_view_follows_attach_and_detach() -> None:
    from dspex.telemetry import events

    assert not events.ATTACHED
    handle = telemetry.attach("dspex.x", lambda *_: None)
    try:
        assert events.ATTACHED and handle in events.ATTACHED
        with pytest.raises(TypeError):
            events.ATTACHED[0] = ("", lambda *_: None)  # type: ignore[index]
    finally:
        telemetry.detach(handle)
    assert not events.ATTACHED
