"""Secrets never leave the LM: not in errors, tracebacks, reprs, log lines or telemetry events.

Two secrets: an API key that a server echoes back in its error bodies, and a password in
``api_base`` (``http://user:password@host``). Every error of every entry point (sync call,
async call, stream, and a ``Predict`` on top) is rendered every way a user or a log could
see it, and grepped.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import socket
import traceback
from collections.abc import Iterator

import orjson
import pytest

import dspex
from dspex.errors import (
    CircuitOpenError,
    LMAuthError,
    LMBadRequestError,
    LMError,
    LMServerError,
    LMTransportError,
)
from dspex.lm import RetryPolicy
from dspex.telemetry import capture
from dspex.testing import Fault, LMServer

KEY = "sk-live-9f8e7d6c5b4a3210"
PASSWORD = "pw-Zq7!xK2@secret"  # '@' and '!' are percent-encoded in the URL
MSGS = [{"role": "user", "content": "hello"}]
MODES = ["sync", "async", "stream", "predict"]


@pytest.fixture
def server() -> Iterator[LMServer]:
    with LMServer() as srv:
        yield srv


def echo_body(text: str) -> bytes:
    """An error body that quotes the credentials back, as some servers and proxies do."""
    return orjson.dumps({"error": {"message": text, "type": "invalid_request_error"}})


def run(mode: str, lm: dspex.LM) -> None:
    if mode == "sync":
        lm(messages=MSGS)
    elif mode == "predict":
        dspex.Predict("question -> answer")(question="q", lm=lm)
    else:

        async def go() -> None:
            try:
                if mode == "async":
                    await lm.acall(messages=MSGS)
                else:
                    async for _ in lm.astream(MSGS):
                        pass
            finally:
                await lm.aclose()

        asyncio.run(go())


def renderings(exc: BaseException) -> str:
    """Everything a user, a log handler or a crash report could print of ``exc``."""
    parts = [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    fields = getattr(exc, "fields", None)
    if fields is not None:
        parts.append(repr(fields))
    parts.append(repr(pickle.loads(pickle.dumps(exc)).__dict__))
    return "\n".join(parts)


def assert_clean(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text, (
            f"secret leaked: ...{text[max(0, text.find(secret) - 80) :][:200]}"
        )


def observe(
    caplog: pytest.LogCaptureFixture, mode: str, lm: dspex.LM, error: type[LMError]
) -> tuple[LMError, str]:
    """Run one failing call; the error and everything logged and emitted meanwhile."""
    caplog.set_level(logging.DEBUG)
    with capture("") as events, pytest.raises(error) as info:
        run(mode, lm)
    seen = [renderings(info.value), caplog.text, repr(events.events)]
    return info.value, "\n".join(seen)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("status", "error"), [(401, LMAuthError), (500, LMServerError), (400, LMBadRequestError)]
)
def test_a_key_echoed_in_an_error_body_is_scrubbed(
    server: LMServer,
    caplog: pytest.LogCaptureFixture,
    mode: str,
    status: int,
    error: type[LMError],
) -> None:
    body = echo_body(f"Incorrect API key provided: {KEY}. Header was 'Bearer {KEY}'.")
    server.fault(Fault(status=status, body=body, times=-1))
    lm = dspex.LM("openai/m", api_base=server.url, api_key=KEY, cache=False, num_retries=1,
                  retry_policy=RetryPolicy(base=0.01, cap=0.01))  # fmt: skip
    exc, seen = observe(caplog, mode, lm, error)
    assert_clean(seen, KEY)
    assert f"HTTP {status}" in str(exc) and "Incorrect API key provided: ***" in str(exc)
    assert server.requests[-1].headers["authorization"] == f"Bearer {KEY}"  # it was sent


def quoted_base(server_url: str) -> str:
    from urllib.parse import quote

    return server_url.replace("http://", f"http://alice:{quote(PASSWORD, safe='')}@")


@pytest.mark.parametrize("mode", MODES)
def test_a_password_in_api_base_stays_out_of_reprs_and_errors(
    server: LMServer, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    from urllib.parse import quote

    base = quoted_base(server.url)
    encoded = quote(PASSWORD, safe="")
    lm = dspex.LM("openai/m", api_base=base, api_key=KEY, cache=True, num_retries=0,
                  circuit_threshold=1, circuit_cooldown=60.0)  # fmt: skip
    assert "alice:***@" in repr(lm)
    for text in (repr(lm), repr(lm.endpoint), str(lm.dump_state()), repr(lm.transport)):
        assert_clean(text, PASSWORD, encoded, KEY)
    # the server echoes the password and the key (decoded, as a proxy might)
    server.fault(Fault(status=500, body=echo_body(f"bad upstream {base} auth {PASSWORD} {KEY}")))
    exc, seen = observe(caplog, mode, lm, LMServerError)
    assert_clean(seen, PASSWORD, encoded, KEY)
    # the breaker is open now: its error names the endpoint, without the password
    exc, seen = observe(caplog, mode, lm, CircuitOpenError)
    assert "alice:***@" in str(exc)
    assert_clean(seen, PASSWORD, encoded, KEY)
    assert_clean(repr(list(lm.history)), PASSWORD, encoded, KEY)


@pytest.mark.parametrize("mode", MODES)
def test_transport_errors_name_the_endpoint_without_its_password(
    caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    from urllib.parse import quote

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there: connection refused
    base = f"http://alice:{quote(PASSWORD, safe='')}@127.0.0.1:{port}/v1"
    lm = dspex.LM("openai/m", api_base=base, api_key=KEY, cache=False, num_retries=0)
    exc, seen = observe(caplog, mode, lm, LMTransportError)
    assert f"alice:***@127.0.0.1:{port}" in str(exc)
    assert_clean(seen, PASSWORD, quote(PASSWORD, safe=""), KEY)


def test_a_short_key_is_not_scrubbed_out_of_every_word(server: LMServer) -> None:
    """Secrets shorter than 4 characters are not scrubbed (they would mangle every message)."""
    server.fault(Fault(status=400, body=echo_body("model m is unknown")))
    lm = dspex.LM("openai/m", api_base=server.url, api_key="m", cache=False)
    with pytest.raises(LMBadRequestError, match="model m is unknown"):
        lm(messages=MSGS)
