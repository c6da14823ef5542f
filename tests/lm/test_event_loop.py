"""The loop sync entry points run async LM calls on: uvloop's when installed, asyncio's on request.

Each case runs in a fresh thread (``run_sync`` keeps one loop per thread) against the real
``LMServer``; the same calls must give the same replies on either loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

import dspex
from dspex._sync import new_loop, run_sync
from dspex.evaluate import Evaluate, answer_exact_match
from dspex.testing import LMServer


def _in_thread(fn: Callable[[], Any]) -> Any:
    out: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as exc:  # re-raised in the test's thread
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "run_sync did not return"
    if errors:
        raise errors[0]
    return out[0]


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_uvloop_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("uvloop")
    monkeypatch.delenv("DSPEX_EVENT_LOOP", raising=False)
    assert _in_thread(lambda: run_sync(_loop_module())).startswith("uvloop")
    loop = new_loop()
    try:
        assert type(loop).__module__.startswith("uvloop")
    finally:
        loop.close()


def test_asyncio_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSPEX_EVENT_LOOP", "asyncio")
    assert _in_thread(lambda: run_sync(_loop_module())).startswith("asyncio")


@pytest.mark.parametrize("choice", ["auto", "asyncio"])
def test_same_replies_on_either_loop(
    server: LMServer, monkeypatch: pytest.MonkeyPatch, choice: str
) -> None:
    monkeypatch.setenv("DSPEX_EVENT_LOOP", choice)
    lm = dspex.LM("openai/test", api_base=server.url, api_key="k", cache=False, num_retries=0)
    dev = [
        dspex.Example(question=f"question {i}", answer="x").with_inputs("question")
        for i in range(12)
    ]

    async def calls() -> list[list[Any]]:
        return list(
            await asyncio.gather(
                *(lm.acall(messages=[{"role": "user", "content": f"q{i}"}]) for i in range(8))
            )
        )

    def evaluate() -> Any:
        with dspex.context(lm=lm):
            return Evaluate(devset=dev, metric=answer_exact_match, num_threads=4)(
                dspex.Predict("question -> answer")
            )

    replies = _in_thread(lambda: run_sync(calls()))
    result = _in_thread(evaluate)

    async def reference() -> tuple[list[Any], list[str]]:  # on a plain asyncio loop
        texts = [await lm.acall(messages=[{"role": "user", "content": f"q{i}"}]) for i in range(8)]
        with dspex.context(lm=lm):
            predict = dspex.Predict("question -> answer")
            answers = [(await predict.acall(question=e.question)).answer for e in dev]
        return texts, answers

    texts, answers = asyncio.run(asyncio.wait_for(reference(), 60))
    assert replies == texts
    assert [prediction.answer for _, prediction, _ in result.results] == answers
    assert result.score == 100 * sum(a == "x" for a in answers) / len(answers)


def test_one_transport_keeps_a_pool_per_loop_and_forgets_closed_ones() -> None:
    """The transport's shortcut to the last loop's pools never hands one loop's pool (or a
    closed one) to another call."""
    with LMServer() as server:
        lm = dspex.LM("openai/m", api_base=server.url, api_key="k", cache=False)
        messages = [{"role": "user", "content": "hi"}]
        seen: list[Any] = []

        async def call() -> None:
            await lm.acall(messages=messages)
            loop = asyncio.get_running_loop()
            seen.append(lm.transport._async[loop][lm._target.origin])  # type: ignore[union-attr]

        async def call_close_call() -> None:
            await call()
            await lm.aclose()
            assert asyncio.get_running_loop() not in lm.transport._async
            await call()  # a new pool, not the closed one

        loops = [new_loop(), asyncio.new_event_loop()]
        try:
            for loop in loops * 2:  # alternating loops, each keeps its own pool
                loop.run_until_complete(call())
            assert seen[0] is seen[2] and seen[1] is seen[3] and seen[0] is not seen[1]
            loops[0].run_until_complete(call_close_call())
            assert seen[4] is seen[0] and seen[5] is not seen[4]
            _in_thread(lambda: run_sync(call()))  # another thread's loop: its own pool
            assert all(seen[6] is not pool for pool in seen[:6])
            loops[1].run_until_complete(call())
            assert seen[7] is seen[1]
        finally:
            for loop in loops:
                loop.run_until_complete(lm.aclose())
                loop.close()
