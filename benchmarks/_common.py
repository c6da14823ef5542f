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


class Floors:
    """What the machine allows without any framework: ``n`` waits of ``latency`` at ``width``
    in flight, on the caller's thread loop (``dspex._sync.run_sync``).

    - ``timer``: ``asyncio.sleep(latency)`` only (no I/O): the event loop's timer and the OS
      scheduler's wake-up delay on this machine now;
    - ``lm``: the same number of raw ``LM.acall`` requests against the server (DSPex's HTTP
      client, no module, adapter or runner around it);
    - ``httpx``: plain ``httpx.AsyncClient`` POSTs of the same body, the pool sized to ``width``.
    """

    def __init__(self, lm: object, url: str, n: int, width: int, latency: float) -> None:
        self.lm, self.url, self.n, self.width, self.latency = lm, url, n, width, latency
        self._client: object = None

    async def _fan(self, one: Callable[[int], object]) -> None:
        import asyncio

        slots = asyncio.Semaphore(self.width)

        async def run(i: int) -> None:
            async with slots:
                await one(i)  # type: ignore[misc]

        await asyncio.gather(*(run(i) for i in range(self.n)))

    def _timed(self, one: Callable[[int], object]) -> float:
        from dspex._sync import run_sync

        start = time.perf_counter()
        run_sync(self._fan(one))
        return time.perf_counter() - start

    def timer(self) -> float:
        import asyncio

        return self._timed(lambda i: asyncio.sleep(self.latency))

    def raw_lm(self) -> float:
        def one(i: int) -> object:
            messages = [{"role": "user", "content": f"question {i}"}]
            return self.lm.acall(messages=messages)  # type: ignore[attr-defined]

        return self._timed(one)

    def httpx(self) -> float:
        import httpx

        if self._client is None:
            limits = httpx.Limits(max_connections=self.width, max_keepalive_connections=self.width)
            self._client = httpx.AsyncClient(limits=limits, timeout=30)
        client: httpx.AsyncClient = self._client  # type: ignore[assignment]

        async def one(i: int) -> None:
            body = {"model": "test", "messages": [{"role": "user", "content": f"question {i}"}]}
            response = await client.post(self.url + "/chat/completions", json=body)
            response.raise_for_status()
            response.json()

        return self._timed(one)

    def close(self) -> None:
        from dspex._sync import run_sync

        if self._client is not None:
            run_sync(self._client.aclose())  # type: ignore[attr-defined]
            self._client = None


def load() -> str:
    """The 1-minute load average, for the results' machine-shared caveat."""
    return f"{os.getloadavg()[0]:.1f}"
