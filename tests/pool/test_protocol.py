"""The frame fast path and the sync caller's waiter, without processes: the hand-written
Call frame decodes to the same message msgpack would build, the frame buffer splits any
chunking of a byte stream the same way, and a sync waiter is settled exactly once."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

import pytest

from dspex.errors import ProtocolError, RemoteError
from dspex.pool.protocol import (
    MAX_FRAME,
    Call,
    Codec,
    FrameBuffer,
    Result,
    call_frame,
    decode,
    pack_args,
)
from dspex.pool.records import SyncWaiter


@pytest.mark.parametrize("req_id", [1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63])
@pytest.mark.parametrize(
    ("timeout", "session", "stream"),
    [(None, None, 0), (60.0, None, 0), (0.25, "s-1", 0), (None, "sé", 8), (1.5, None, 300)],
)
def test_call_frame_is_the_call_message(
    req_id: int, timeout: float | None, session: str | None, stream: int
) -> None:
    codec = Codec()
    args, kwargs = (1, "x", b"\x00\xff", [2.5, None]), {"k": {"n": [1, 2]}}
    frame = call_frame(req_id, "work", pack_args(args, kwargs, codec), timeout, session, stream)
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4
    expected = Call("call", req_id, "work", list(args), kwargs, timeout, session, stream)
    assert codec.unpack(frame[4:]) == expected


def test_frame_buffer_splits_any_chunking_the_same_way() -> None:
    codec = Codec()
    frames = [codec.frame(Result("result", i, "v" * (i * 37 % 300))) for i in range(1, 40)]
    stream = b"".join(frames)
    whole = [codec.unpack(f[4:]) for f in frames]
    for step in (1, 3, 4, 5, 64, len(frames[0]), len(stream)):
        buf = FrameBuffer()
        got = []
        for pos in range(0, len(stream), step):
            got += [codec.unpack(b) for b in buf.feed(stream[pos : pos + step])]
        assert got == whole, step
        assert len(buf) == 0
    buf = FrameBuffer()  # one whole frame (the fast path), then a frame split after it
    assert buf.feed(frames[0]) == [frames[0][4:]]
    assert buf.feed(frames[1] + frames[2][:6]) == [frames[1][4:]]
    assert len(buf) == 6
    assert buf.feed(frames[2][6:]) == [frames[2][4:]]


def test_frame_buffer_refuses_an_oversized_frame() -> None:
    with pytest.raises(ProtocolError, match="exceeds"):
        FrameBuffer().feed((MAX_FRAME + 1).to_bytes(4, "big") + b"x")


def test_decode_refuses_a_malformed_message() -> None:
    with pytest.raises(ProtocolError):
        decode(["no-such-kind", 1])


def test_sync_waiter_is_settled_once() -> None:
    waiter = SyncWaiter()
    assert waiter.set(True, "first")
    assert not waiter.set(False, RemoteError("second"))
    assert waiter.result() == "first"
    assert waiter.result() == "first"  # (stays settled)

    failed = SyncWaiter()
    assert failed.set(False, RemoteError("boom"))
    with pytest.raises(RemoteError, match="boom"):
        failed.result()

    cancelled = SyncWaiter()
    assert cancelled.set(False, asyncio.CancelledError())
    with pytest.raises(concurrent.futures.CancelledError):
        cancelled.result()


def test_sync_waiter_wakes_a_waiting_thread_and_one_racer_wins() -> None:
    for _ in range(200):
        waiter = SyncWaiter()
        wins: list[int] = []
        start = threading.Barrier(3)

        def racer(
            n: int, w: SyncWaiter = waiter, won: list[int] = wins, go: threading.Barrier = start
        ) -> None:
            go.wait()
            if w.set(True, n):
                won.append(n)

        threads = [threading.Thread(target=racer, args=(n,)) for n in (1, 2)]
        for t in threads:
            t.start()
        start.wait()
        value = waiter.result()
        for t in threads:
            t.join()
        assert len(wins) == 1
        assert value == wins[0]


def test_sync_waiter_settle_keeps_the_first_outcome() -> None:
    """A direct caller settling its own call gets its value, unless the pool thread settled
    the call first (then that outcome is the one returned or raised)."""
    own = SyncWaiter()
    assert own.settle(True, "mine") == "mine"
    assert own.result() == "mine"

    beaten = SyncWaiter()
    assert beaten.set(False, RemoteError("pool closed"))
    with pytest.raises(RemoteError, match="pool closed"):
        beaten.settle(True, "late")

    failed = SyncWaiter()
    with pytest.raises(RemoteError, match="boom"):
        failed.settle(False, RemoteError("boom"))

    for _ in range(200):  # a thread asleep in result() is woken by whoever settles first
        waiter = SyncWaiter()
        got: list[object] = []
        sleeper = threading.Thread(target=lambda w=waiter, g=got: g.append(w.result()))
        sleeper.start()
        settled = waiter.settle(True, 1)
        sleeper.join()
        assert got == [settled] == [1]
