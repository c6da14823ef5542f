"""The LM client's retry, deadline and error rules against the real local server."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest

import dspex
from dspex.errors import (
    CircuitOpenError,
    ConfigurationError,
    ContextWindowExceeded,
    LMAuthError,
    LMBadRequestError,
    LMRateLimitError,
    LMServerError,
    LMTimeoutError,
    LMTransportError,
)
from dspex.lm import RetryPolicy
from dspex.testing import Fault, LMServer

MSGS = [{"role": "user", "content": "hello"}]


@pytest.fixture
def server() -> Iterator[LMServer]:
    with LMServer() as srv:
        yield srv


def make_lm(server: LMServer, **kw: object) -> dspex.LM:
    params: dict[str, object] = {"api_base": server.url, "api_key": "sk-secret-123", "cache": False}
    params.update(kw)
    return dspex.LM("openai/m", **params)  # type: ignore[arg-type]


def test_429_with_retry_after_waits_then_succeeds(server: LMServer) -> None:
    server.fault(Fault(status=429, headers={"Retry-After": "2"}))
    lm = make_lm(server)
    start = time.monotonic()
    out = lm(messages=MSGS)
    elapsed = time.monotonic() - start
    assert out and len(server.requests) == 2
    assert elapsed >= 2.0  # waited the Retry-After (no upper bound: the machine may be loaded)


def test_retry_after_beyond_the_cap_fails_at_once(server: LMServer) -> None:
    server.fault(Fault(status=429, headers={"Retry-After": "3600"}))
    start = time.monotonic()
    with pytest.raises(LMRateLimitError) as info:
        make_lm(server)(messages=MSGS)
    assert time.monotonic() - start < 1.0
    assert info.value.retry_after == 3600 and len(server.requests) == 1


def test_500s_are_retried_with_jittered_backoff(server: LMServer) -> None:
    server.fault(Fault(status=500, times=2))
    lm = make_lm(server, num_retries=3, retry_policy=RetryPolicy(base=0.1, cap=1.0))
    start = time.monotonic()
    assert lm(messages=MSGS)
    elapsed = time.monotonic() - start
    # two waits of at least 0.05 s and 0.1 s (no upper bound: the machine may be loaded)
    assert elapsed >= 0.15
    assert len(server.requests) == 3


def test_permanent_failure_sees_num_retries_plus_one_requests(server: LMServer) -> None:
    server.fault(Fault(status=503, times=-1))
    lm = make_lm(server, num_retries=2, retry_policy=RetryPolicy(base=0.01, cap=0.02))
    with pytest.raises(LMServerError) as info:
        lm(messages=MSGS)
    assert len(server.requests) == 3 and info.value.status == 503


@pytest.mark.parametrize(
    ("status", "error"),
    [(401, LMAuthError), (403, LMAuthError), (400, LMBadRequestError), (404, LMBadRequestError)],
)
def test_client_errors_fail_after_one_request(
    server: LMServer, status: int, error: type[Exception]
) -> None:
    server.fault(Fault(status=status))
    with pytest.raises(error) as info:
        make_lm(server)(messages=MSGS)
    assert len(server.requests) == 1
    assert "sk-secret-123" not in str(info.value) and "sk-secret-123" not in repr(info.value.fields)  # type: ignore[attr-defined]


def test_context_window_errors_are_recognised(server: LMServer) -> None:
    body = '{"error": {"message": "This model\'s maximum context length is 8192 tokens", "code": "context_length_exceeded"}}'
    server.fault(Fault(status=400, body=body))
    with pytest.raises(ContextWindowExceeded):
        make_lm(server)(messages=MSGS)


@pytest.mark.parametrize("fault", [Fault(hang=True), Fault(drip=0.2), Fault(delay=5.0)])
def test_deadline_holds_against_hangs_and_slow_drip(server: LMServer, fault: Fault) -> None:
    server.fault(fault)
    lm = make_lm(server, timeout=1.0, num_retries=0)
    start = time.monotonic()
    with pytest.raises(LMTimeoutError):
        lm(messages=MSGS)
    assert time.monotonic() - start < 1.0 + 0.5


def test_deadline_covers_retries(server: LMServer) -> None:
    server.fault(Fault(hang=True, times=-1))
    lm = make_lm(server, timeout=1.0, num_retries=5)
    start = time.monotonic()
    with pytest.raises(LMTimeoutError):
        lm(messages=MSGS)
    assert time.monotonic() - start < 1.5


def test_blackholed_connect_times_out() -> None:
    # A listener that never accepts, its backlog filled: further SYNs get no answer.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(8):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(s)
    try:
        lm = dspex.LM(
            "openai/m",
            api_base=f"http://127.0.0.1:{port}/v1",
            api_key="k",
            cache=False,
            timeout=1.0,
        )
        start = time.monotonic()
        with pytest.raises((LMTimeoutError, LMTransportError)):
            lm(messages=MSGS)
        assert time.monotonic() - start < 1.5
    finally:
        for s in fillers:
            s.close()
        listener.close()


def test_refused_connection_is_a_transport_error() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    lm = dspex.LM("openai/m", api_base=f"http://127.0.0.1:{port}/v1", api_key="k", cache=False, num_retries=1,
                  retry_policy=RetryPolicy(base=0.01))  # fmt: skip
    with pytest.raises(LMTransportError):
        lm(messages=MSGS)


def test_dropped_connection_is_retried(server: LMServer) -> None:
    server.fault(Fault(drop=True))
    assert make_lm(server, retry_policy=RetryPolicy(base=0.01))(messages=MSGS)
    assert len(server.requests) == 2


def test_circuit_breaker_opens_fails_fast_and_half_opens(server: LMServer) -> None:
    server.fault(Fault(status=500, times=3))
    lm = dspex.LM("openai/cb", api_base=server.url + "/", api_key="k", cache=False, num_retries=0,
                  circuit_threshold=3, circuit_cooldown=0.5)  # fmt: skip
    for _ in range(3):
        with pytest.raises(LMServerError):
            lm(messages=MSGS)
    assert lm.breaker.state == "open"
    with pytest.raises(CircuitOpenError):
        lm(messages=MSGS)
    assert len(server.requests) == 3
    time.sleep(0.55)
    assert lm.breaker.state == "half_open"
    assert lm(messages=MSGS)  # the probe succeeds and closes the circuit
    assert lm.breaker.state == "closed"


def test_keys_never_appear_in_repr_state_or_cache_keys(server: LMServer) -> None:
    lm = make_lm(server, cache=True)
    lm(messages=MSGS)
    assert "sk-secret-123" not in repr(lm) and "sk-secret-123" not in str(lm.dump_state())
    db = dspex.current().cache_dir / "lm_cache.sqlite"
    assert b"sk-secret-123" not in db.read_bytes()
    assert server.requests[0].headers["authorization"] == "Bearer sk-secret-123"


def test_unknown_provider_fails_at_the_first_request_and_bad_options_at_once() -> None:
    # As DSPy: any model string builds an LM; one no provider here speaks fails when called.
    with pytest.raises(ConfigurationError, match="unknown LM provider"):
        dspex.LM("nope/model")(messages=MSGS)
    with pytest.raises(ConfigurationError, match="provider/model"):
        dspex.LM("gpt-4o")(messages=MSGS)
    with pytest.raises(ConfigurationError, match="no model id"):
        dspex.LM("openai/")
    with pytest.raises(ConfigurationError):
        dspex.LM("openai/x", api_key="k", timeout=0)


def test_many_threads_and_tasks_at_once(server: LMServer) -> None:
    lm = make_lm(server)
    results: list[int] = []

    def worker() -> None:
        for _ in range(5):
            results.append(len(lm(messages=MSGS)))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    async def many() -> list[list[str]]:
        return await asyncio.gather(
            *(lm.acall(messages=[{"role": "user", "content": str(i)}]) for i in range(50))
        )

    outs = asyncio.run(many())
    assert results == [1] * 40 and len(outs) == 50
