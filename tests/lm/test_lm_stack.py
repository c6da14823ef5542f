"""The LM as a stack: one transport, one attempt flow for call/acall/astream, breaker rules.

Every test runs against the real local server (``LMServer``) or a raw socket server.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import pytest

import dspex
from dspex.errors import (
    CircuitOpenError,
    ConfigurationError,
    LMBadRequestError,
    LMServerError,
    LMTransportError,
)
from dspex.lm import RetryPolicy, track_usage
from dspex.lm.resilience import CircuitBreaker
from dspex.lm.wire import HTTPTransport
from dspex.telemetry import capture
from dspex.testing import Fault, LMServer

MSGS = [{"role": "user", "content": "hello"}]
FAST = RetryPolicy(base=0.01, cap=0.02)


@pytest.fixture
def server() -> Iterator[LMServer]:
    with LMServer() as srv:
        yield srv


def make_lm(server: LMServer, model: str = "openai/m", **kw: object) -> dspex.LM:
    params: dict[str, object] = {"api_base": server.url, "api_key": "k", "cache": False}
    params.update(kw)
    return dspex.LM(model, **params)  # type: ignore[arg-type]


async def stream_text(lm: dspex.LM) -> str:
    return "".join([piece async for piece in lm.astream(MSGS)])


def run(mode: str, lm: dspex.LM) -> str:
    """One call through the entry point ``mode``: the whole text."""
    if mode == "sync":
        return lm(messages=MSGS)[0]

    async def go() -> str:
        try:
            if mode == "async":
                return (await lm.acall(messages=MSGS))[0]
            return await stream_text(lm)
        finally:
            await lm.aclose()

    return asyncio.run(go())


MODES = ["sync", "async", "stream"]


def trip(lm: dspex.LM, server: LMServer) -> None:
    """Open ``lm``'s breaker with failing calls (threshold consecutive 500s)."""
    server.fault(Fault(status=500, times=lm.circuit_threshold))
    for _ in range(lm.circuit_threshold):
        with pytest.raises(LMServerError):
            lm(messages=MSGS)
    assert lm.breaker.state == "open"


# ---------------------------------------------------------------- one flow, three drivers


@pytest.mark.parametrize("mode", MODES)
def test_every_entry_point_retries_by_the_same_rules(server: LMServer, mode: str) -> None:
    server.fault(Fault(status=503, times=2))
    lm = make_lm(server, model="openai/rules", num_retries=2, retry_policy=FAST)
    assert run(mode, lm)
    assert len(server.requests) == 3
    server.fault(Fault(status=503, times=-1))
    with pytest.raises(LMServerError):
        run(mode, lm)
    assert len(server.requests) == 6  # num_retries + 1 more
    server.clear()


@pytest.mark.parametrize("mode", MODES)
def test_every_entry_point_fails_fast_on_an_open_breaker(server: LMServer, mode: str) -> None:
    lm = make_lm(server, model=f"openai/open-{mode}", num_retries=0, circuit_threshold=2,
                 circuit_cooldown=60.0)  # fmt: skip
    trip(lm, server)
    sent = len(server.requests)
    with pytest.raises(CircuitOpenError):
        run(mode, lm)
    assert len(server.requests) == sent


@pytest.mark.parametrize("model", ["openai/m", "anthropic/m"])
def test_a_stream_records_usage_history_and_telemetry(server: LMServer, model: str) -> None:
    lm = make_lm(server, model=model)
    with track_usage() as tracker, capture("dspex.lm") as cap:
        text = run("stream", lm)
    assert text and lm.history[-1]["outputs"] == [text]
    usage = tracker.get_lm_usage()[model]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert cap.names() == ["dspex.lm.request.start", "dspex.lm.request.stop"]
    stop = cap.named("dspex.lm.request.stop")[0][2]
    assert stop["status"] == 200 and stop["attempts"] == 1 and stop["total_tokens"] > 0
    assert server.requests[-1].json["stream"] is True


@pytest.mark.parametrize("mode", MODES)
def test_one_transport_failure_mapping_for_every_entry_point(mode: str) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)

    def serve() -> None:  # answers every request with something that is not HTTP
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(b"SSH-2.0-OpenSSH\r\n\r\n")

    threading.Thread(target=serve, daemon=True).start()
    try:
        lm = dspex.LM("openai/m", api_base=f"http://127.0.0.1:{listener.getsockname()[1]}/v1",
                      api_key="k", cache=False, num_retries=0)  # fmt: skip
        with pytest.raises(LMTransportError, match="malformed HTTP response"):
            run(mode, lm)
    finally:
        listener.close()


def test_an_injected_transport_is_shared_and_kept_by_copies(server: LMServer) -> None:
    transport = HTTPTransport(max_response_bytes=1 << 20)
    a = make_lm(server, transport=transport)
    b = make_lm(server, model="anthropic/x", transport=transport)
    assert a(messages=MSGS) and b(messages=MSGS)
    assert a.transport is b.transport is a.copy(temperature=1.0).transport
    assert len(transport._sync) == 1  # one origin, one pool of connections for both LMs
    with pytest.raises(ConfigurationError):
        make_lm(server, transport=transport, max_response_bytes=10)


def test_copy_keeps_retry_policy_breaker_settings_and_limits(server: LMServer) -> None:
    policy = RetryPolicy(base=0.5, cap=2.0, max_retry_after=5.0)
    lm = make_lm(server, retry_policy=policy, circuit_threshold=7, circuit_cooldown=3.0,
                 history_size=9, max_response_bytes=12345, temperature=0.3)  # fmt: skip
    clone = lm.copy(max_tokens=10)
    assert clone.retry_policy == policy
    assert (clone.circuit_threshold, clone.circuit_cooldown) == (7, 3.0)
    assert clone.breaker is lm.breaker  # same endpoint, same settings: one breaker
    assert (clone.breaker.threshold, clone.breaker.cooldown) == (7, 3.0)
    assert clone.history.maxlen == 9 and clone.transport.max_response_bytes == 12345
    assert clone.transport is not lm.transport  # an LM-owned transport is not shared
    assert clone.kwargs == {"temperature": 0.3, "max_tokens": 10, "api_base": server.url}
    assert lm.copy(circuit_threshold=2).breaker is not lm.breaker


# ---------------------------------------------------------------- circuit breaker


def test_breakers_are_keyed_by_endpoint_and_settings(server: LMServer) -> None:
    strict = make_lm(server, model="openai/keyed", num_retries=0, circuit_threshold=1)
    lenient = make_lm(server, model="openai/keyed", num_retries=0, circuit_threshold=100)
    assert strict.breaker is not lenient.breaker and lenient.breaker.threshold == 100
    server.fault(Fault(status=500, times=3))
    with pytest.raises(LMServerError):
        strict(messages=MSGS)
    assert strict.breaker.state == "open"
    for _ in range(2):
        with pytest.raises(LMServerError):
            lenient(messages=MSGS)
    assert lenient.breaker.state == "closed"  # 2 failures of its 100
    assert lenient(messages=MSGS)


def test_a_probe_that_gets_a_400_closes_the_circuit(server: LMServer) -> None:
    lm = make_lm(server, model="openai/probe400", num_retries=0, circuit_threshold=2,
                 circuit_cooldown=0.2)  # fmt: skip
    trip(lm, server)
    breaker = lm.breaker
    breaker.opened_at = breaker.opened_at - 1.0  # type: ignore[operator]  # cooldown over
    assert breaker.state == "half_open"
    server.fault(Fault(status=400))
    with pytest.raises(LMBadRequestError):
        lm(messages=MSGS)  # the probe: the endpoint answered
    assert breaker.state == "closed" and not breaker.probing
    for _ in range(3):
        assert lm(messages=MSGS)


@pytest.mark.parametrize("mode", ["async", "stream"])
async def test_a_cancelled_probe_lets_the_next_call_probe(server: LMServer, mode: str) -> None:
    lm = make_lm(server, model=f"openai/cancel-{mode}", num_retries=0, circuit_threshold=2,
                 circuit_cooldown=0.2)  # fmt: skip
    trip(lm, server)
    breaker = lm.breaker
    breaker.opened_at = breaker.opened_at - 1.0  # type: ignore[operator]
    server.fault(Fault(hang=True))
    sent = len(server.requests)
    if mode == "async":
        task = asyncio.create_task(lm.acall(messages=MSGS))
    else:
        task = asyncio.create_task(stream_text(lm))
    for _ in range(500):  # until the probe's request is on the wire (bounded: no hang)
        if len(server.requests) > sent:
            break
        await asyncio.sleep(0.01)
    assert breaker.probing
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not breaker.probing and breaker.state == "half_open"
    assert await lm.acall(messages=MSGS)  # the next call is the probe; it succeeds
    assert breaker.state == "closed"
    await lm.aclose()


def test_an_interrupted_sync_probe_and_a_timed_out_probe_end_the_probe(server: LMServer) -> None:
    lm = make_lm(server, model="openai/timeout-probe", num_retries=0, timeout=0.3,
                 circuit_threshold=1, circuit_cooldown=0.2)  # fmt: skip
    trip(lm, server)
    breaker = lm.breaker
    breaker.opened_at = breaker.opened_at - 1.0  # type: ignore[operator]
    server.fault(Fault(hang=True))
    with pytest.raises(dspex.LMTimeoutError):
        lm(messages=MSGS)  # a failed probe re-opens the circuit for a new cooldown
    assert breaker.state == "open" and not breaker.probing


def test_breaker_settle_rules() -> None:
    breaker = CircuitBreaker(threshold=2, cooldown=0.0)
    assert breaker.admit("e") is False
    breaker.settle(False, False)
    breaker.settle(False, False)
    assert breaker.state == "half_open"  # cooldown 0: open and at once half-open
    assert breaker.admit("e") is True  # the probe
    with pytest.raises(CircuitOpenError, match="probe is in flight"):
        breaker.admit("e")
    breaker.settle(True, None)  # abandoned: no verdict, the next call probes
    assert breaker.admit("e") is True
    breaker.settle(True, False)  # failed: open again
    assert breaker.failures == 3 and breaker.opened_at is not None
    assert breaker.admit("e") is True
    breaker.settle(True, True)
    assert breaker.state == "closed" and breaker.failures == 0
    with pytest.raises(ConfigurationError):
        CircuitBreaker(threshold=0)
