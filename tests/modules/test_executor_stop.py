"""When a fan-out stops its items (``max_errors`` reached), an item whose sync ``forward``
runs in a worker thread (which cancelling its task cannot reach) makes no further module
call: the thread ends at its next one instead of finishing the forward in the background."""

from __future__ import annotations

import threading
from typing import Any

import pytest

import dspex
from dspex.errors import ExecutionCancelled
from dspex.testing import DummyLM

WAIT = 10.0  # seconds; every wait below ends long before unless something is broken


class Blocking(dspex.Module):
    """``ok`` items call one Predict, wait for the test, then try a second; ``bad`` fails
    once every ``ok`` item is waiting."""

    def __init__(self, ok_items: int) -> None:
        super().__init__()
        self.first = dspex.Predict("question -> answer")
        self.second = dspex.Predict("question -> answer")
        self.waiting = threading.Semaphore(0)
        self.ok_items = ok_items
        self.release = threading.Event()
        self.second_calls = 0
        self.done: list[threading.Event] = []
        self.lock = threading.Lock()

    def forward(self, question: str) -> Any:
        if question == "bad":
            for _ in range(self.ok_items):
                assert self.waiting.acquire(timeout=WAIT)
            raise ValueError("bad example")
        done = threading.Event()
        with self.lock:
            self.done.append(done)
        try:
            answer = self.first(question=question).answer
            self.waiting.release()
            assert self.release.wait(WAIT)
            prediction = self.second(question=answer)
            with self.lock:
                self.second_calls += 1
            return prediction
        finally:
            done.set()


def test_items_in_worker_threads_stop_at_their_next_module_call() -> None:
    program = Blocking(ok_items=3)
    pairs = [(program, {"question": q}) for q in ("ok1", "ok2", "ok3", "bad")]
    with dspex.context(lm=DummyLM(lambda messages: {"answer": "a"})):
        with pytest.raises(ExecutionCancelled):
            dspex.Parallel(num_threads=4, max_errors=1, disable_progress_bar=True)(pairs)
        program.release.set()
        for done in program.done:
            assert done.wait(WAIT)
    assert len(program.done) == 3
    assert program.second_calls == 0  # each thread's second Predict was refused
