"""A pool handler for ``bench_bridge.py``: the benchmark's DSPy call run *inside* a pool
worker, back to back, timed there (no bridge, no parent in the loop).

It runs in a worker forked from a template that preloaded DSPy, with the DSPy pool's
environment, exactly like a bridged call's worker; so "in-process DSPy vs this" is the cost
of being a worker process, and "this vs a bridged call" the cost of the bridge itself.
"""

from __future__ import annotations

import time
from typing import Any


class Probe:
    def __init__(self) -> None:
        import dspy

        self.dspy = dspy
        self.pred = dspy.Predict("question -> answer")
        self.lms: dict[str, Any] = {}

    def run(self, spec: dict[str, Any], n: int, warmup: int, usage: bool) -> list[float]:
        """Seconds per call of ``n`` calls after ``warmup``, then the thread CPU per call."""
        from dspex.bridge.host import dspy_lm

        key = repr(sorted(spec.items()))
        lm = self.lms.get(key)
        if lm is None:
            lm = self.lms[key] = dspy_lm(self.dspy, spec)
        with self.dspy.context(lm=lm, track_usage=usage):
            for _ in range(warmup):
                self.pred(question="q")
            out = []
            cpu = time.thread_time()
            for _ in range(n):
                start = time.perf_counter()
                self.pred(question="q")
                out.append(time.perf_counter() - start)
            out.append((time.thread_time() - cpu) / n)
        return out

    def pid(self) -> int:
        import os

        return os.getpid()


def make() -> Probe:
    return Probe()
