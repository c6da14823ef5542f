"""Shared helpers for the benchmark scripts (timing, stats, results files)."""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

RESULTS = Path(__file__).resolve().parent / "results"


def per_call(fn: Callable[[], object], n: int, warmup: int = 20) -> list[float]:
    """Seconds per call for ``n`` calls after ``warmup``."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def p50(xs: list[float]) -> float:
    return statistics.median(xs)


def p99(xs: list[float]) -> float:
    return sorted(xs)[max(0, int(len(xs) * 0.99) - 1)]


def us(x: float) -> str:
    return f"{x * 1e6:,.1f} µs"


def ms(x: float) -> str:
    return f"{x * 1e3:,.3f} ms"


def write(name: str, text: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.md").write_text(text.strip() + "\n")
    print(text)


def start_lmserver(latency: float = 0.0) -> tuple[subprocess.Popen[bytes], str]:
    """An LMServer in its own process (so it does not share our GIL); ``(process, url)``.
    ``latency``: seconds the server waits before every reply."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dspex.testing.lmserver",
            "--port",
            str(port),
            "--latency",
            str(latency),
        ],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    proc.stdout.readline()
    return proc, f"http://127.0.0.1:{port}/v1"
