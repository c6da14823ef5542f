"""Core engine vs DSPy 3.4.1: import time, signature construction, format+parse, Predict overhead.

Run: ``.venv/bin/python benchmarks/bench_core.py`` (writes benchmarks/results/core.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import dspex
from _common import p50, per_call, us, write
from dspex.testing import DummyLM


def import_time(module: str, runs: int = 7) -> float:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    subprocess.run(
        [sys.executable, "-c", code], env=env, check=True, capture_output=True
    )  # warm .pyc
    times = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True
        )
        times.append(float(out.stdout.strip()))
    return p50(times)


def main() -> None:
    import dspy
    from dspy.utils.dummies import DummyLM as DspyDummyLM

    rows: list[tuple[str, float, float]] = []
    rows.append(("`import` (fresh process, warm .pyc)", import_time("dspex"), import_time("dspy")))

    spec = "context: list[str], question -> answer: str, confidence: float"
    rows.append((
        "string signature, same string again",
        p50(per_call(lambda: dspex.Signature(spec), 2000)),
        p50(per_call(lambda: dspy.Signature(spec), 300)),
    ))  # fmt: skip
    counter = iter(range(10**9))
    rows.append((
        "string signature, new string each time",
        p50(per_call(lambda: dspex.Signature(f"q{next(counter)}: int, c -> a: list[str]"), 1000)),
        p50(per_call(lambda: dspy.Signature(f"q{next(counter)}: int, c -> a: list[str]"), 300)),
    ))  # fmt: skip

    def class_form(lib: object) -> object:
        class QA(lib.Signature):  # type: ignore[attr-defined,name-defined,misc]
            """Answer questions."""

            question: str = lib.InputField(desc="q")  # type: ignore[attr-defined]
            answer: int = lib.OutputField()  # type: ignore[attr-defined]

        return QA

    rows.append((
        "class-form signature",
        p50(per_call(lambda: class_form(dspex), 1000)),
        p50(per_call(lambda: class_form(dspy), 300)),
    ))  # fmt: skip

    n_sig, d_sig = dspex.Signature(spec), dspy.Signature(spec)
    demos = [{"context": ["a", "b"], "question": "q1", "answer": "x", "confidence": 0.5}]
    inputs = {"context": ["c1", "c2"], "question": "What?"}
    completion = "[[ ## answer ## ]]\nParis\n\n[[ ## confidence ## ]]\n0.9\n\n[[ ## completed ## ]]"
    n_ad, d_ad = dspex.ChatAdapter(), dspy.ChatAdapter()
    rows.append((
        "ChatAdapter format + parse",
        p50(per_call(lambda: (n_ad.format(n_sig, demos, inputs), n_ad.parse(n_sig, completion)), 2000)),
        p50(per_call(lambda: (d_ad.format(d_sig, demos, inputs), d_ad.parse(d_sig, completion)), 500)),
    ))  # fmt: skip

    reply = {"answer": "Paris", "confidence": 0.9}
    native_lm = DummyLM(lambda messages: reply)
    native = dspex.Predict(spec)
    dspy_lm = DspyDummyLM([reply] * 5000)
    dspy_predict = dspy.Predict(spec)
    dspy.configure(lm=dspy_lm)
    rows.append((
        "Predict call with an in-process dummy LM",
        p50(per_call(lambda: native(lm=native_lm, **inputs), 2000)),
        p50(per_call(lambda: dspy_predict(**inputs), 500)),
    ))  # fmt: skip

    lines = [
        "## Core engine (issue: native engine core)",
        "",
        "`.venv/bin/python benchmarks/bench_core.py` — p50 per operation, same process, same run.",
        "",
        "| operation | DSPex | DSPy 3.4.1 | DSPy / DSPex |",
        "|---|---:|---:|---:|",
    ]
    for name, ours, theirs in rows:
        lines.append(f"| {name} | {us(ours)} | {us(theirs)} | {theirs / ours:,.1f}x |")
    lines += [
        "",
        "The Predict row is framework overhead: both LMs answer in process with a fixed reply,",
        "so it measures formatting, the LM call path, parsing and Prediction building.",
        f"Measured {time.strftime('%Y-%m-%d')}.",
    ]
    write("core", "\n".join(lines))


if __name__ == "__main__":
    main()
