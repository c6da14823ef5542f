"""``stoppable``: once its event is set, module calls under it are refused with
``CallStopped`` — on the task itself and in the worker thread a sync ``forward`` runs in."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import dspex
from dspex.errors import CallStopped
from dspex.primitives.calling import stoppable
from dspex.testing import DummyLM


class Counting:
    """DummyLM replies that count the LM calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, messages: list[Any]) -> dict[str, str]:
        self.calls += 1
        return {"answer": "a"}


class TwoCalls(dspex.Module):
    """A sync forward (run in a worker thread by ``acall``) that stops itself half way."""

    def __init__(self, stop: threading.Event) -> None:
        super().__init__()
        self.stop = stop
        self.first = dspex.Predict("question -> answer")
        self.second = dspex.Predict("question -> answer")
        self.thread = ""

    def forward(self, question: str) -> Any:
        self.thread = threading.current_thread().name
        answer = self.first(question=question).answer
        self.stop.set()  # as the optimizer does once it no longer needs this work
        return self.second(question=answer)


def test_calls_run_until_stopped_then_are_refused() -> None:
    stop = threading.Event()
    replies = Counting()
    lm = DummyLM(replies)
    predict = dspex.Predict("question -> answer")
    with dspex.context(lm=lm), stoppable(stop):
        assert predict(question="q").answer == "a"
        stop.set()
        with pytest.raises(CallStopped, match="Predict call refused"):
            predict(question="q")
    with dspex.context(lm=lm):  # outside the scope, calls run again
        assert predict(question="q").answer == "a"
    assert replies.calls == 2


def test_a_sync_forward_in_a_worker_thread_stops_at_its_next_module_call() -> None:
    stop = threading.Event()
    replies = Counting()
    lm = DummyLM(replies)
    program = TwoCalls(stop)

    async def main() -> None:
        with stoppable(stop):
            await program.acall(question="q")

    with dspex.context(lm=lm), pytest.raises(CallStopped):
        asyncio.run(main())
    assert program.thread != threading.current_thread().name  # it ran in a worker thread
    assert replies.calls == 1  # the second Predict never reached the LM


def test_acall_is_refused_too() -> None:
    stop = threading.Event()
    stop.set()
    predict = dspex.Predict("question -> answer")

    async def main() -> None:
        with stoppable(stop):
            await predict.acall(question="q")

    with dspex.context(lm=DummyLM([{"answer": "a"}])), pytest.raises(CallStopped):
        asyncio.run(main())


def test_scopes_nest_an_outer_stop_reaches_inside_an_inner_scope() -> None:
    outer, inner = threading.Event(), threading.Event()
    predict = dspex.Predict("question -> answer")
    with dspex.context(lm=DummyLM(Counting())), stoppable(outer):
        with stoppable(inner):
            assert predict(question="q").answer == "a"
            outer.set()
            with pytest.raises(CallStopped):
                predict(question="q")
        with pytest.raises(CallStopped):  # and after the inner scope
            predict(question="q")
