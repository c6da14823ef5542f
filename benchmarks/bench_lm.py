"""Native LM client vs DSPy 3.4.1 (litellm) against the same local LM server, in one run.

The server runs in its own process (``python -m dspex.testing.lmserver``) so it does not
share the client's GIL. Run: ``.venv/bin/python benchmarks/bench_lm.py``.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import socket
import subprocess
import sys
import time

import dspex
from _common import ms, p50, p99, per_call, write

SPEC = "question -> answer"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dspex.testing.lmserver", "--port", str(port)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    proc.stdout.readline()
    return proc, f"http://127.0.0.1:{port}/v1"


def raw_floor(url: str, body: bytes, n: int) -> list[float]:
    host, port = url.split("//")[1].split("/")[0].split(":")
    conn = http.client.HTTPConnection(host, int(port))

    def call() -> None:
        conn.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
        conn.getresponse().read()

    return per_call(call, n)


async def throughput(call: object, total: int, concurrency: int) -> float:
    sem = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with sem:
            await call()  # type: ignore[operator]

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(total)))
    return total / (time.perf_counter() - start)


def main() -> None:
    import dspy

    proc, url = start_server()
    try:
        sig = dspex.Signature(SPEC)
        messages = dspex.ChatAdapter().format(
            sig, [], {"question": "What is the capital of France?"}
        )
        body = json.dumps({"model": "m", "messages": messages}).encode()
        floor = raw_floor(url, body, 2000)

        lm = dspex.LM("openai/m", api_base=url, api_key="k", cache=False)
        native_lm = per_call(lambda: lm(messages=messages), 2000)
        predict = dspex.Predict(SPEC)
        native_predict = per_call(
            lambda: predict(question="What is the capital of France?", lm=lm), 2000
        )

        dlm = dspy.LM("openai/m", api_base=url, api_key="k", cache=False)
        dspy.configure(lm=dlm)
        dpredict = dspy.Predict(SPEC)
        dspy_predict = per_call(lambda: dpredict(question="What is the capital of France?"), 300)

        async def native_call() -> None:
            await predict.acall(question="q", lm=lm)

        async def dspy_call() -> None:
            await dpredict.acall(question="q")

        native_tp = asyncio.run(throughput(native_call, 3000, 64))
        dspy_tp = asyncio.run(throughput(dspy_call, 600, 64))

        cached = dspex.LM("openai/m", api_base=url, api_key="k", cache=True)
        dcached = dspy.LM("openai/m", api_base=url, api_key="k", cache=True)
        native_hit = per_call(lambda: cached(messages=messages), 3000)
        dspy_hit = per_call(lambda: dcached(messages=messages), 1000)
    finally:
        proc.terminate()
        proc.wait(5)

    lines = [
        "## LM client (issue: native LM clients)",
        "",
        "`.venv/bin/python benchmarks/bench_lm.py` — LMServer in a separate process on 127.0.0.1,",
        "cache off unless stated; per-call p50 (p99), sequential calls from one thread.",
        "",
        "| measurement | DSPex | DSPy 3.4.1 | ratio |",
        "|---|---:|---:|---:|",
        f"| raw `http.client` keep-alive floor | {ms(p50(floor))} ({ms(p99(floor))}) | | |",
        f"| `LM` call | {ms(p50(native_lm))} ({ms(p99(native_lm))}) | | {p50(native_lm) / p50(floor):.2f}x the floor |",
        f"| `Predict` call (sync) | {ms(p50(native_predict))} ({ms(p99(native_predict))}) | {ms(p50(dspy_predict))} ({ms(p99(dspy_predict))}) | DSPy {p50(dspy_predict) / p50(native_predict):.1f}x slower; DSPex {p50(native_predict) / p50(floor):.2f}x the floor |",
        f"| `Predict.acall` throughput, concurrency 64 | {native_tp:,.0f} calls/s | {dspy_tp:,.0f} calls/s | {native_tp / dspy_tp:.1f}x |",
        f"| cache hit (`LM` call) | {ms(p50(native_hit))} | {ms(p50(dspy_hit))} | {p50(dspy_hit) / p50(native_hit):.1f}x |",
        "",
        "DSPy's throughput uses its native async path (`Predict.acall` → litellm `acompletion`).",
        f"Measured {time.strftime('%Y-%m-%d')}.",
    ]
    write("lm", "\n".join(lines))


if __name__ == "__main__":
    main()
