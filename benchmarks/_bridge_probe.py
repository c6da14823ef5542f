"""A pool handler for ``bench_bridge.py``: the benchmark's DSPy call run *inside* a pool
worker, back to back, timed there (no bridge, no parent in the loop).

It runs in a worker forked from a template that preloaded DSPy, with the DSPy pool's
environment, exactly like a bridged call's worker; so "in-process DSPy vs this" is the cost
of being a worker process, and "this vs a bridged call" the cost of the bridge itself.

It is also the bridge's own handler (a ``DSPyHost``) timing each ``call`` it serves, so a
bridged module on this pool tells, call by call, how much of its latency was spent outside
the worker's ``DSPyHost.call`` (parent, frames, wake-ups, the worker loop).
"""

from __future__ import annotations

import os
import time
from typing import Any

from dspex.bridge.allowlist import parse_code_opt_in
from dspex.bridge.host import CODE_EXECUTION_ENV, IMPORT_ROOTS_ENV, DSPyHost


class Probe(DSPyHost):
    def __init__(self) -> None:
        roots = [r.strip() for r in os.environ.get(IMPORT_ROOTS_ENV, "").split(",") if r.strip()]
        super().__init__(roots, parse_code_opt_in(os.environ.get(CODE_EXECUTION_ENV, "")))
        import dspy

        self.dspy = dspy
        self.call_times: list[float] = []
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
        return os.getpid()

    def call(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return super().call(*args, **kwargs)
        finally:
            self.call_times.append(time.perf_counter() - start)

    def take_call_times(self) -> list[float]:
        """Seconds each ``call`` took in this worker since the last take."""
        out, self.call_times = self.call_times, []
        return out


def make() -> Probe:
    return Probe()
