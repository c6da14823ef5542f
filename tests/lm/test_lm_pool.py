"""The asyncio connection pool: counted slots with a FIFO waiter queue, one deadline watchdog."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import orjson
import pytest

from dspex.lm.transport import ConnectionPool, DeadlineExceeded, Target
from dspex.testing import Fault, LMServer


@pytest.fixture
def server() -> Iterator[LMServer]:
    with LMServer() as srv:
        yield srv


def post(server: LMServer, text: str) -> bytes:
    target = Target(server.url + "/chat/completions", {"content-type": "application/json"})
    body = {"model": "m", "messages": [{"role": "user", "content": text}]}
    return target.post(orjson.dumps(body))


def new_pool(server: LMServer, slots: int) -> ConnectionPool:
    return ConnectionPool("http", server.host, server.port, max_connections=slots)


def in_60s() -> float:
    return time.monotonic() + 60


def hangs(text: str) -> Fault:
    return Fault(hang=True, match=text, times=-1)


async def test_requests_beyond_the_slots_queue_and_all_complete(server: LMServer) -> None:
    server.latency = 0.02
    pool = new_pool(server, 2)
    try:
        replies = await asyncio.gather(
            *(pool.request(post(server, f"q{i}"), in_60s()) for i in range(8))
        )
        assert [r.status for r in replies] == [200] * 8
        assert len(server.requests) == 8
        assert len(pool._idle) <= 2 and pool._in_flight == 0 and not pool._waiters
    finally:
        await pool.aclose()


async def test_a_deadline_passing_while_queued_for_a_slot_frees_nothing_it_did_not_hold(
    server: LMServer,
) -> None:
    server.fault(hangs("hang"))
    pool = new_pool(server, 1)
    try:
        holder = asyncio.ensure_future(pool.request(post(server, "hang"), time.monotonic() + 0.5))
        await asyncio.sleep(0.05)  # the holder has the only slot
        with pytest.raises(TimeoutError):  # raised by the slot wait (HTTPTransport maps it)
            await pool.request(post(server, "queued"), time.monotonic() + 0.1)
        assert not pool._waiters and pool._in_flight == 1
        with pytest.raises(DeadlineExceeded):
            await holder
        assert pool._in_flight == 0
        assert (await pool.request(post(server, "after"), in_60s())).status == 200
    finally:
        await pool.aclose()


async def test_a_cancelled_waiter_leaves_the_queue_and_a_handed_slot_passes_on(
    server: LMServer,
) -> None:
    server.latency = 0.05
    pool = new_pool(server, 1)
    try:
        first = asyncio.ensure_future(pool.request(post(server, "first"), in_60s()))
        await asyncio.sleep(0)
        second = asyncio.ensure_future(pool.request(post(server, "second"), in_60s()))
        third = asyncio.ensure_future(pool.request(post(server, "third"), in_60s()))
        await asyncio.sleep(0.01)
        assert len(pool._waiters) == 2
        second.cancel()
        assert (await first).status == 200
        assert (await third).status == 200
        with pytest.raises(asyncio.CancelledError):
            await second
        assert pool._in_flight == 0 and not pool._waiters
        # a slot handed to a waiter cancelled in the same loop turn is passed on, not lost
        pool._in_flight = 1  # a holder (not a real request here)
        waiting = asyncio.ensure_future(pool.request(post(server, "waiting"), in_60s()))
        await asyncio.sleep(0)
        assert len(pool._waiters) == 1
        pool._free_slot()  # the holder leaves: its slot is handed to "waiting"...
        waiting.cancel()  # ... which is cancelled before it could run
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert pool._in_flight == 0 and not pool._waiters
        assert (await pool.request(post(server, "after"), in_60s())).status == 200
        assert pool._in_flight == 0
    finally:
        await pool.aclose()


async def test_the_watchdog_rearms_for_an_earlier_deadline_and_after_firing(
    server: LMServer,
) -> None:
    server.fault(hangs("hang"))
    pool = new_pool(server, 8)
    try:
        slow = asyncio.ensure_future(pool.request(post(server, "hang long"), in_60s()))
        await asyncio.sleep(0.05)
        assert pool._watchdog is not None and pool._watchdog_at > time.monotonic() + 50
        soon = time.monotonic() + 0.2
        later = time.monotonic() + 0.4
        results = await asyncio.wait_for(
            asyncio.gather(
                pool.request(post(server, "hang 1"), soon),
                pool.request(post(server, "hang 2"), later),
                return_exceptions=True,
            ),
            10,  # a bound, not a timing assertion: without the re-armed watchdog this hangs
        )
        assert all(isinstance(r, DeadlineExceeded) for r in results)
        assert time.monotonic() >= later  # never before its deadline
        assert not slow.done() and pool._watchdog_at > time.monotonic() + 50
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        assert pool._in_flight == 0 and not pool._watched
        server.clear()
        assert (await pool.request(post(server, "fine"), in_60s())).status == 200
    finally:
        await pool.aclose()


async def test_a_reply_already_complete_is_kept_when_the_deadline_fires(server: LMServer) -> None:
    pool = new_pool(server, 1)
    try:
        assert (await pool.request(post(server, "x"), in_60s())).status == 200
        conn = pool._idle[0]
        conn.expire()  # the watchdog reaching a finished exchange changes nothing
        assert conn.error is None and not conn.closed
    finally:
        await pool.aclose()


async def test_a_deadline_already_past_sends_nothing(server: LMServer) -> None:
    pool = new_pool(server, 1)
    try:
        with pytest.raises(DeadlineExceeded):
            await pool.request(post(server, "late"), time.monotonic() - 1)
        assert server.requests == [] and pool._in_flight == 0
    finally:
        await pool.aclose()
