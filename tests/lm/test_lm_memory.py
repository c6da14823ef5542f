"""Bounded state: 10k LM calls leave resident memory flat (history and caches are capped)."""

from __future__ import annotations

import gc

import psutil
import pytest

import dspex
from dspex.testing import LMServer


def test_rss_stays_flat_over_10k_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    # the process-wide history (dspex.inspect_history) and each module's history keep DSPy's
    # 10k entries; bound them to the warm-up size here so the test measures the LM's own state
    monkeypatch.setattr("dspex.utils.inspect_history.MAX_HISTORY_SIZE", 1_000)
    # modules keep DSPy's 10k-entry history, and the default trace DSPy's 10k entries, too
    dspex.configure(max_history_size=1_000, max_trace_size=1_000)
    process = psutil.Process()
    with LMServer() as server:
        lm = dspex.LM("openai/test", api_base=server.url, api_key="k", cache=False)
        predict = dspex.Predict("question -> answer")
        for i in range(1_000):  # warm up: allocator arenas, connection, history fills up
            predict(question=f"q{i}", lm=lm)
        server.clear()
        gc.collect()
        before = process.memory_info().rss
        for i in range(10_000):
            predict(question=f"q{i}", lm=lm)
            if i % 1_000 == 0:
                server.clear()  # the test server records requests; ours must not grow
        gc.collect()
        grown = process.memory_info().rss - before
    assert len(lm.history) == 1_000
    assert grown < 8 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB over 10k calls"
