"""``dspex.settings`` as DSPy users write it, backed by the typed Settings object."""

from __future__ import annotations

import asyncio
import threading

import pytest

import dspex
from dspex.errors import ConfigurationError

dspy = pytest.importorskip("dspy")


def test_every_dspy_setting_is_accepted_and_has_dspys_default() -> None:
    from dspy.dsp.utils.settings import DEFAULT_CONFIG

    for key, default in DEFAULT_CONFIG.items():
        assert key in dspex.settings, key
        assert getattr(dspex.settings, key) == default, key
    dspex.configure(**DEFAULT_CONFIG)


def test_the_default_trace_records_bounded_and_none_turns_it_off() -> None:
    from dspex.utils import DummyLM

    program = dspex.Predict("question -> answer")
    dspex.configure(lm=DummyLM([{"answer": "a"}] * 6), max_trace_size=2)
    for _ in range(3):
        program(question="q")
    assert [entry[0] for entry in dspex.settings.trace] == [program, program]
    dspex.configure(trace=None)
    program(question="q")
    assert dspex.settings.trace is None
    with dspex.context(trace=[]) as scoped:
        program(question="q")
    assert len(scoped.trace or []) == 1


def test_unknown_key_is_a_typed_error_naming_the_valid_ones() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown setting\(s\) lmm; known: .*\blm\b"):
        dspex.configure(lmm=1)
    with pytest.raises(ConfigurationError, match="num_threads must be a non-negative integer"):
        dspex.configure(num_threads=-1)
    with pytest.raises(AttributeError, match="no setting 'nope'"):
        _ = dspex.settings.nope


def test_reads_assignment_items_and_context() -> None:
    dspex.settings.configure(num_threads=3)
    assert dspex.settings.num_threads == 3 and dspex.settings["num_threads"] == 3
    dspex.settings.max_errors = 2  # assignment configures, as in DSPy
    assert dspex.current().max_errors == 2 and dspex.settings.get("max_errors") == 2
    assert dspex.settings.get("not-a-setting", "x") == "x"
    with dspex.settings.context(num_threads=5):
        assert dspex.settings.num_threads == 5
    assert dspex.settings.num_threads == 3
    assert dspex.settings.config["max_errors"] == 2


def test_context_is_per_thread_and_per_task() -> None:
    seen: dict[str, int] = {}

    def other() -> None:
        seen["thread"] = dspex.settings.num_threads

    with dspex.context(num_threads=7):
        t = threading.Thread(target=other)
        t.start()
        t.join()

    async def task(n: int) -> int:
        with dspex.context(num_threads=n):
            await asyncio.sleep(0)
            return int(dspex.settings.num_threads)

    async def both() -> list[int]:
        return list(await asyncio.gather(task(11), task(12)))

    assert seen["thread"] == 8  # a plain thread sees the process defaults, not the context
    assert asyncio.run(both()) == [11, 12]


def test_settings_save_and_load_need_allow_pickle(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "settings.pkl"
    dspex.configure(num_threads=4)
    dspex.settings.save(path, exclude_keys=["lm"])
    with pytest.raises(ConfigurationError, match="allow_pickle=True"):
        dspex.load_settings(path)
    loaded = dspex.load_settings(path, allow_pickle=True)
    assert loaded["num_threads"] == 4 and "lm" not in loaded
