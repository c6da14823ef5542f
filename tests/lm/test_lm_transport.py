"""The LM's own HTTP/1.1 transport: sync and async paths, connection reuse, body framings."""

from __future__ import annotations

import asyncio
import gzip
import socket
import threading
import time
from collections.abc import Callable, Iterator

import orjson
import pytest

import dspex
from dspex.errors import LMRateLimitError, LMTimeoutError, LMTransportError
from dspex.lm import RetryPolicy
from dspex.testing import Fault, LMServer

MSGS = [{"role": "user", "content": "hello"}]
OK_BODY = orjson.dumps({"choices": [{"index": 0, "message": {"content": "hi"}}], "usage": {}})


@pytest.fixture
def server() -> Iterator[LMServer]:
    with LMServer() as srv:
        yield srv


def make_lm(url: str, **kw: object) -> dspex.LM:
    params: dict[str, object] = {"api_base": url, "api_key": "sk-secret-123", "cache": False}
    params.update(kw)
    return dspex.LM("openai/m", **params)  # type: ignore[arg-type]


def call(lm: dspex.LM, mode: str) -> list[str]:
    if mode == "sync":
        return lm(messages=MSGS)

    async def run() -> list[str]:
        try:
            return await lm.acall(messages=MSGS)
        finally:
            await lm.aclose()

    return asyncio.run(run())


MODES = ["sync", "async"]


class RawServer:
    """A socket server that answers each request with ``respond(n)`` bytes (n counts requests).

    ``close_after`` closes the connection after each reply, as a server ending an idle
    keep-alive connection would.
    """

    def __init__(self, respond: Callable[[int], bytes], close_after: bool = False) -> None:
        self.respond = respond
        self.close_after = close_after
        self.connections = 0
        self.requests = 0
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/v1"
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            buffer = b""
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, rest = buffer.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                while len(rest) < length:
                    rest += conn.recv(65536)
                buffer = rest[length:]
                self.requests += 1
                conn.sendall(self.respond(self.requests))
                if self.close_after:
                    time.sleep(0.05)  # the client gets the reply before the close
                    return

    def close(self) -> None:
        self.listener.close()


def reply(body: bytes, *headers: str) -> bytes:
    head = "\r\n".join(["HTTP/1.1 200 OK", "content-type: application/json", *headers])
    return head.encode() + b"\r\n\r\n" + body


@pytest.mark.parametrize("mode", MODES)
def test_a_connection_the_server_closed_is_replaced_without_a_retry(mode: str) -> None:
    raw = RawServer(lambda n: reply(OK_BODY, f"content-length: {len(OK_BODY)}"), close_after=True)
    try:
        lm = make_lm(raw.url, num_retries=0)
        if mode == "sync":
            assert lm(messages=MSGS) == ["hi"]
            time.sleep(0.1)
            start = time.monotonic()
            assert lm(messages=MSGS) == ["hi"]  # the stale connection is resent on a fresh one
        else:

            async def run() -> None:
                assert await lm.acall(messages=MSGS) == ["hi"]
                await asyncio.sleep(0.1)
                assert await lm.acall(messages=MSGS) == ["hi"]
                await lm.aclose()

            start = time.monotonic()
            asyncio.run(run())
        assert time.monotonic() - start < 0.5
        assert raw.requests == 2 and raw.connections == 2
    finally:
        raw.close()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "response",
    [
        reply(b"\r\n".join([b"%x" % len(OK_BODY[:10]), OK_BODY[:10], b"%x" % len(OK_BODY[10:]),
                            OK_BODY[10:], b"0", b"", b""]), "transfer-encoding: chunked"),
        reply(gzip.compress(OK_BODY), "content-encoding: gzip",
              f"content-length: {len(gzip.compress(OK_BODY))}"),
        reply(OK_BODY, "connection: close"),  # no length: the body ends when the server closes
    ],
    ids=["chunked", "gzip", "read-to-close"],
)  # fmt: skip
def test_body_framings(mode: str, response: bytes) -> None:
    close = b"connection: close" in response
    raw = RawServer(lambda n: response, close_after=close)
    try:
        lm = make_lm(raw.url, num_retries=0)
        assert call(lm, mode) == ["hi"]
        assert call(lm, mode) == ["hi"]
        assert raw.connections == (2 if close else 1 if mode == "sync" else 2)
    finally:
        raw.close()


@pytest.mark.parametrize("mode", MODES)
def test_garbage_reply_is_a_transport_error(mode: str) -> None:
    raw = RawServer(lambda n: b"SSH-2.0-OpenSSH\r\n\r\n", close_after=True)
    try:
        with pytest.raises(LMTransportError):
            call(make_lm(raw.url, num_retries=0), mode)
    finally:
        raw.close()


@pytest.mark.parametrize("mode", MODES)
def test_async_and_sync_paths_share_the_retry_rules(server: LMServer, mode: str) -> None:
    server.fault(Fault(status=429, headers={"Retry-After": "0.3"}))
    server.fault(Fault(drop=True))
    lm = make_lm(server.url, retry_policy=RetryPolicy(base=0.01))
    start = time.monotonic()
    assert call(lm, mode)
    assert time.monotonic() - start >= 0.3
    assert len(server.requests) == 3
    server.fault(Fault(status=429, headers={"Retry-After": "3600"}))
    with pytest.raises(LMRateLimitError):
        call(lm, mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fault", [{"hang": True}, {"drip": 0.2}], ids=["hang", "drip"])
def test_both_paths_hold_the_deadline(
    server: LMServer, mode: str, fault: dict[str, object]
) -> None:
    server.fault(Fault(**fault))  # type: ignore[arg-type]
    lm = make_lm(server.url, timeout=0.8, num_retries=0)
    start = time.monotonic()
    with pytest.raises(LMTimeoutError):
        call(lm, mode)
    assert time.monotonic() - start < 0.8 + 0.4
    assert call(lm, mode)  # the timed-out connection was not reused


async def test_a_cancelled_call_does_not_poison_the_pool(server: LMServer) -> None:
    server.fault(Fault(delay=0.5))
    lm = make_lm(server.url)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(lm.acall(messages=MSGS), 0.1)
    assert await lm.acall(messages=MSGS)
    await lm.aclose()


def test_credentials_stay_out_of_reprs(server: LMServer) -> None:
    lm = make_lm(server.url)
    assert "sk-secret-123" not in repr(lm.endpoint)
    assert "sk-secret-123" not in repr(lm._target)
    lm(messages=MSGS)
    assert server.requests[-1].headers["authorization"] == "Bearer sk-secret-123"
    lm.close()


def test_copies_and_pickles_carry_configuration_not_connections(server: LMServer) -> None:
    import copy
    import pickle

    lm = make_lm(server.url, temperature=0.5)
    assert lm(messages=MSGS)
    for clone in (copy.copy(lm), copy.deepcopy(lm), pickle.loads(pickle.dumps(lm))):
        assert clone.transport is not lm.transport
        assert clone.kwargs == {"temperature": 0.5, "api_base": server.url}
        assert clone(messages=MSGS)
        clone.close()
    predict = dspex.Predict("question -> answer")
    predict.lm = lm
    assert predict.deepcopy().lm is not lm
    lm.close()
