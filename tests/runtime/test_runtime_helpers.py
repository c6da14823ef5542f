"""asyncify's shared limiter, saved-version warnings, and cloudpickled optimizers."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Any
from unittest import mock

import cloudpickle
import pytest

import dspex
from dspex.teleprompt.teleprompt import Teleprompter
from dspex.utils.asyncify import AsyncLimiter, get_limiter
from dspex.utils.callback import BaseCallback


async def test_the_limiter_is_one_object_sized_by_the_current_setting() -> None:
    limiter = get_limiter()
    assert limiter.total_tokens == 8
    with dspex.context(async_max_workers=3):
        assert get_limiter() is limiter and limiter.total_tokens == 3
    assert get_limiter().total_tokens == 8


async def test_the_limiter_admits_at_most_its_capacity_and_frees_on_cancel() -> None:
    limiter = AsyncLimiter(2)
    inside, peak = 0, 0
    gate = asyncio.Event()

    async def hold() -> None:
        nonlocal inside, peak
        async with limiter:
            inside += 1
            peak = max(peak, inside)
            await gate.wait()
            inside -= 1

    tasks = [asyncio.create_task(hold()) for _ in range(5)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert (inside, limiter.borrowed_tokens) == (2, 2)
    tasks[4].cancel()  # a waiter leaves: it never takes a token
    limiter.total_tokens = 3  # raising the capacity admits one more waiter
    for _ in range(5):
        await asyncio.sleep(0)
    assert inside == 3
    gate.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert (peak, limiter.borrowed_tokens) == (3, 0)


def test_the_limiter_is_shared_across_event_loops_in_threads() -> None:
    limiter = AsyncLimiter(1)
    order: list[str] = []
    first_in = threading.Event()
    release = threading.Event()

    async def first() -> None:
        async with limiter:
            order.append("first in")
            first_in.set()
            await asyncio.to_thread(release.wait, 30)
            order.append("first out")

    async def second() -> None:
        async with limiter:
            order.append("second in")

    thread = threading.Thread(target=asyncio.run, args=(first(),))
    thread.start()
    assert first_in.wait(30)
    other = threading.Thread(target=asyncio.run, args=(second(),))
    other.start()
    release.set()
    thread.join(30)
    other.join(30)
    assert order == ["first in", "first out", "second in"]


def test_loading_warns_once_per_mismatched_dependency(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    saved = {"python": "3.0", "dspy": "0.1", "cloudpickle": "0.1"}
    program = dspex.Predict("q -> a")
    with mock.patch("dspex.primitives.module.get_dependency_versions", return_value=saved):
        program.save(tmp_path / "prog", save_program=True)
        program.save(tmp_path / "state.json")
    with caplog.at_level(logging.WARNING, logger="dspex.utils.saving"):
        caplog.clear()
        loaded = dspex.load(tmp_path / "prog", allow_pickle=True)
        mismatches = [r for r in caplog.records if "There is a mismatch of" in r.getMessage()]
        assert len(mismatches) == 3
        caplog.clear()
        dspex.Predict("q -> a").load(tmp_path / "state.json")
        assert sum("There is a mismatch of" in r.getMessage() for r in caplog.records) == 3
    assert loaded.signature == program.signature


def test_a_pickled_optimizer_class_still_reports_its_compile() -> None:
    def make() -> type[Teleprompter]:
        class Opt(Teleprompter):
            def compile(self, student: Any, *, trainset: list[Any]) -> Any:
                return student

        return Opt

    opt_cls = cloudpickle.loads(cloudpickle.dumps(make()))
    seen: list[str] = []

    class Recorder(BaseCallback):
        def on_compile_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
            seen.append("start")

        def on_compile_end(self, call_id: str, outputs: Any, exception: Any = None) -> None:
            seen.append("end")

    with dspex.context(callbacks=[Recorder()]):
        opt_cls().compile(dspex.Module(), trainset=[])
    assert seen == ["start", "end"]


def test_a_state_missing_a_parameter_is_a_key_error_and_changes_nothing(tmp_path: Path) -> None:
    from dspex.errors import StateError, StateKeyMissing

    class Prog(dspex.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = dspex.Predict("q -> a")
            self.b = dspex.Predict("q -> a")

    source = Prog()
    source.a.demos = [dspex.Example(q="1", a="2")]
    state = {k: v for k, v in source.dump_state().items() if k != "b"}
    target = Prog()
    with pytest.raises(KeyError) as info:
        target.load_state(state)
    assert isinstance(info.value, StateKeyMissing) and isinstance(info.value, StateError)
    assert "'b'" in str(info.value) and target.a.demos == []


async def test_a_streamed_sync_program_can_send_its_own_chunks_from_its_thread() -> None:
    import anyio.from_thread

    class Note:
        def __init__(self, text: str) -> None:
            self.text = text

    class Program(dspex.Module):
        def forward(self, question: str) -> dspex.Prediction:
            async def send() -> None:
                await dspex.settings.send_stream.send(Note("working"))

            anyio.from_thread.run(send)  # back on the streaming loop, as DSPy programs do
            dspex.settings.send_stream.send(Note("sync send"))  # or without awaiting
            return dspex.Prediction(answer=question.upper())

    items = [item async for item in dspex.streamify(Program())(question="hi")]
    assert [type(i).__name__ for i in items] == ["Note", "Note", "Prediction"]
    assert [items[0].text, items[1].text, items[2].answer] == ["working", "sync send", "HI"]
