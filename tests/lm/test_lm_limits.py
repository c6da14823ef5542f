"""Bounded replies: body size and gzip inflation are capped with a typed error, on every path."""

from __future__ import annotations

import asyncio
import functools
import json
import socket
import struct
import subprocess
import sys
import threading
import zlib
from collections.abc import Callable, Iterator

import pytest

import dspex
from dspex.errors import LMResponseTooLarge
from dspex.lm.wire import HTTPTransport

MSGS = [{"role": "user", "content": "hello"}]
MODES = ["sync", "async", "stream"]
MiB = 1 << 20


@functools.cache
def gzip_bomb(mib: int) -> bytes:
    """A valid gzip body (~1 KiB per 1 MiB of zeros) inflating to ``mib`` MiB.

    After a full flush the deflate state is reset, so each further 1 MiB of zeros
    compresses to the same bytes: the body is built by repetition, not by compressing.
    """
    zero = bytes(MiB)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = deflate.compress(zero) + deflate.flush(zlib.Z_FULL_FLUSH)
    block = deflate.compress(zero) + deflate.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(mib):
        crc = zlib.crc32(zero, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    trailer = struct.pack("<II", crc, (mib * MiB) & 0xFFFFFFFF)
    return header + first + block * (mib - 1) + deflate.flush() + trailer


class BodyServer:
    """Answers every request with ``head`` then the chunks of ``body()`` until the client leaves."""

    def __init__(self, head: bytes, body: Callable[[], Iterator[bytes]]) -> None:
        self.head, self.body = head, body
        self.sent = 0
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/v1"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                conn.sendall(self.head)
                for chunk in self.body():
                    conn.sendall(chunk)
                    self.sent += len(chunk)
            except OSError:
                return  # the client dropped the connection: what a capped client does

    def close(self) -> None:
        self.listener.close()


def call(mode: str, lm: dspex.LM) -> object:
    if mode == "sync":
        return lm(messages=MSGS)

    async def go() -> object:
        try:
            if mode == "async":
                return await lm.acall(messages=MSGS)
            return [piece async for piece in lm.astream(MSGS)]
        finally:
            await lm.aclose()

    return asyncio.run(go())


def make_lm(url: str, **kw: object) -> dspex.LM:
    params: dict[str, object] = {"api_base": url, "api_key": "k", "cache": False}
    params.update(kw)
    return dspex.LM("openai/m", **params)  # type: ignore[arg-type]


def zeros(total: int, size: int = MiB) -> Callable[[], Iterator[bytes]]:
    def chunks() -> Iterator[bytes]:
        chunk = bytes(size)
        for _ in range(total // size):
            yield chunk

    return chunks


@pytest.mark.parametrize("mode", MODES)
def test_a_100mb_body_is_refused_at_its_content_length(mode: str) -> None:
    size = 100 * MiB
    server = BodyServer(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % size,
        zeros(size),
    )
    try:
        with pytest.raises(LMResponseTooLarge) as info:
            call(mode, make_lm(server.url, num_retries=3))
        assert info.value.limit == 32 * MiB  # the default cap  # type: ignore[attr-defined]
        assert "max_response_bytes" in str(info.value)
        assert server.sent < size  # refused before the body was read
    finally:
        server.close()


@pytest.mark.parametrize("mode", MODES)
def test_a_body_without_length_is_cut_at_the_cap(mode: str) -> None:
    def endless() -> Iterator[bytes]:  # chunked, 64 KiB chunks, 100 MB in all
        chunk = b"%x\r\n" % (64 << 10) + bytes(64 << 10) + b"\r\n"
        for _ in range(1600):
            yield chunk

    server = BodyServer(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
        endless,
    )
    try:
        lm = make_lm(server.url, max_response_bytes=1 * MiB)
        with pytest.raises(LMResponseTooLarge) as info:
            call(mode, lm)
        assert info.value.limit == MiB  # type: ignore[attr-defined]
        with pytest.raises(LMResponseTooLarge):  # again: the cut connection was not reused
            call(mode, lm)
    finally:
        server.close()


@pytest.mark.parametrize("mode", MODES)
def test_a_gzip_bomb_stops_inflating_at_the_cap(mode: str) -> None:
    bomb = gzip_bomb(1024)  # ~1 MB on the wire, 1 GiB inflated
    assert len(bomb) < 2 * MiB
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\n"
        b"content-length: %d\r\n\r\n" % len(bomb)
    )
    server = BodyServer(head, lambda: iter([bomb]))
    try:
        lm = dspex.LM("openai/m", api_base=server.url, api_key="k", cache=False,
                      transport=HTTPTransport(max_response_bytes=4 * MiB))  # fmt: skip
        with pytest.raises(LMResponseTooLarge, match="inflated"):
            call(mode, lm)
    finally:
        server.close()


def test_small_gzip_and_bodies_under_the_cap_still_work() -> None:
    body = json.dumps({"choices": [{"index": 0, "message": {"content": "hi" * 1000}}]}).encode()
    packed = zlib.compress(body)
    server = BodyServer(
        b"HTTP/1.1 200 OK\r\ncontent-encoding: deflate\r\ncontent-length: %d\r\n\r\n" % len(packed),
        lambda: iter([packed]),
    )
    try:
        assert call("sync", make_lm(server.url, max_response_bytes=len(body))) == ["hi" * 1000]
        with pytest.raises(LMResponseTooLarge):
            call("sync", make_lm(server.url, max_response_bytes=len(body) - 1))
    finally:
        server.close()


_CLIENT = """
import asyncio, json, resource, sys
import dspex
from dspex.errors import LMResponseTooLarge

lm = dspex.LM("openai/m", api_base=sys.argv[1], api_key="k", cache=False, num_retries=0)
msgs = [{"role": "user", "content": "x"}]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
errors = []
for mode in ("sync", "async"):
    try:
        lm(messages=msgs) if mode == "sync" else asyncio.run(lm.acall(messages=msgs))
    except LMResponseTooLarge as exc:
        errors.append(exc.limit)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"grown_kib": peak - before, "errors": errors}))
"""


@pytest.mark.slow
def test_a_gzip_bomb_leaves_resident_memory_bounded() -> None:
    """1 MB of gzip inflating to 1 GiB, default cap: the client's peak RSS grows < 160 MiB."""
    bomb = gzip_bomb(1024)
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\n"
        b"content-length: %d\r\n\r\n" % len(bomb)
    )
    server = BodyServer(head, lambda: iter([bomb]))
    try:
        out = subprocess.run(
            [sys.executable, "-c", _CLIENT, server.url],
            capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
    finally:
        server.close()
    report = json.loads(out.stdout)
    assert report["errors"] == [32 * MiB, 32 * MiB]
    assert report["grown_kib"] < 160 * 1024, report  # measured ~92 MiB; unbounded: ~3 GiB
