"""``drive``/``adrive``: the one runner of an attempt flow (the LM's calls and the Embedder's
batches), blocking and on the loop, making the same requests and pauses for the same replies."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from dspex.errors import LMBadRequestError, LMServerError
from dspex.lm.flow import Attempts, ErrorMap, adrive, attempt_flow, drive
from dspex.lm.providers import resolve
from dspex.lm.resilience import CircuitBreaker, RetryPolicy
from dspex.lm.transport import HTTPError, Response

ENDPOINT = resolve("openai/m", "http://127.0.0.1:9/v1", "k")


def rules(breaker: CircuitBreaker, retries: int = 3) -> Attempts:
    return Attempts(
        retries, RetryPolicy(base=0.001, cap=0.002), breaker, ErrorMap(ENDPOINT, "m", 5)
    )


def replies(*items: Response | HTTPError) -> tuple[Callable[[], Response], list[int]]:
    """A scripted ``send``: each call returns (or raises) the next item; counts the calls."""
    queue: Iterator[Response | HTTPError] = iter(items)
    seen: list[int] = []

    def send() -> Response:
        seen.append(1)
        item = next(queue)
        if isinstance(item, HTTPError):
            raise item
        return item

    return send, seen


def ok(body: bytes = b"fine") -> Response:
    return Response(200, "OK", {}, body)


def run_both(
    script: Callable[[], tuple[Callable[[], Response], list[int]]],
    accept: Callable[[Response], Any],
    retries: int = 3,
) -> list[tuple[str, Any, int, CircuitBreaker]]:
    """The same script through drive and adrive: (outcome, value or error type, sends, breaker)."""
    results = []
    for mode in ("sync", "async"):
        breaker = CircuitBreaker(threshold=10)
        send, seen = script()
        flow = attempt_flow(rules(breaker, retries), time.monotonic() + 5, accept)
        try:
            if mode == "sync":
                value = drive(flow, send)
            else:

                async def asend(send: Callable[[], Response] = send) -> Response:
                    return send()

                value = asyncio.run(adrive(flow, asend))
            results.append(("ok", value, len(seen), breaker))
        except Exception as exc:
            results.append(("error", type(exc), len(seen), breaker))
    return results


def test_sync_and_async_retry_the_same_way_and_return_the_flow_result() -> None:
    def script() -> tuple[Callable[[], Response], list[int]]:
        return replies(Response(503, "busy", {}, b""), HTTPError("reset"), ok(b"done"))

    (s_kind, s_value, s_sent, s_breaker), (a_kind, a_value, a_sent, a_breaker) = run_both(
        script, lambda r: r.body
    )
    assert s_kind == a_kind == "ok" and s_sent == a_sent == 3
    assert s_value[0] == a_value[0] == b"done" and s_value[2] == a_value[2] == 3  # attempts
    assert s_breaker.failures == a_breaker.failures == 0  # the success settled it


def test_a_none_result_is_a_result_not_a_request() -> None:
    def script() -> tuple[Callable[[], Response], list[int]]:
        return replies(ok())

    for kind, value, sent, _ in run_both(script, lambda r: None):
        assert (kind, value[0], sent) == ("ok", None, 1)


def test_errors_are_the_flows_in_both_drivers() -> None:
    def bad() -> tuple[Callable[[], Response], list[int]]:
        return replies(Response(400, "bad", {}, b'{"error": {"message": "no"}}'))

    def down() -> tuple[Callable[[], Response], list[int]]:
        return replies(*[Response(500, "x", {}, b"")] * 3)

    assert [(k, v, n) for k, v, n, _ in run_both(bad, lambda r: r)] == [
        ("error", LMBadRequestError, 1), ("error", LMBadRequestError, 1),
    ]  # fmt: skip
    for kind, value, sent, breaker in run_both(down, lambda r: r, retries=2):
        assert (kind, value, sent, breaker.failures) == ("error", LMServerError, 3, 3)


def test_an_interrupted_request_closes_the_flow_and_frees_the_probe() -> None:
    class Interrupted(Exception):
        pass

    def boom() -> Response:
        raise Interrupted

    async def aboom() -> Response:
        raise Interrupted

    for mode in ("sync", "async"):
        breaker = CircuitBreaker(threshold=1, cooldown=0)
        breaker.settle(False, False)  # open; cooldown 0: the next request is the probe
        flow = attempt_flow(rules(breaker), time.monotonic() + 5, lambda r: r)
        with pytest.raises(Interrupted):
            if mode == "sync":
                drive(flow, boom)
            else:
                asyncio.run(adrive(flow, aboom))
        assert breaker.probing is False and breaker.failures == 1  # no verdict recorded
        assert flow.gi_frame is None  # closed
