"""`dspex serve` under load vs the DSPy-docs FastAPI recipe, on loopback.

Both servers serve ``Predict("question -> answer")`` against the same LMServer (its own
process). DSPex: ``dspex serve app.py:predict`` (native Predict). DSPy: the deployment
recipe from DSPy's docs, a hand-written FastAPI endpoint awaiting
``dspy.asyncify(dspy.Predict(...))`` under uvicorn. A load generator in this process keeps
``--clients`` keep-alive connections busy for ``--seconds`` (after a warm-up) and records
each request's latency; every response must be HTTP 200 with an answer.

It also measures the worker-pool round trip (a trivial ``echo`` handler) on the local
process pool and on the Ray pool backend (a local Ray cluster, 2 CPUs), when ``ray`` is
installed: p50 of sequential calls and the throughput of 32 concurrent callers.

Usage: ``.venv/bin/python benchmarks/bench_server.py [--clients 64] [--seconds 10] [--no-ray]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import orjson
import psutil

from _common import p50, p99, start_lmserver, write

DSPEX_APP = """
import os, dspex
dspex.configure(lm=dspex.LM("openai/bench", api_base=os.environ["BENCH_LM"], api_key="k",
                            cache=False))
predict = dspex.Predict("question -> answer")
"""

# DSPy's "Deployment" tutorial: FastAPI + dspy.asyncify, as written there.
DSPY_APP = """
import os, dspy
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

dspy.configure(lm=dspy.LM("openai/bench", api_base=os.environ["BENCH_LM"], api_key="k",
                          cache=False))
program = dspy.asyncify(dspy.Predict("question -> answer"))
app = FastAPI()

class Question(BaseModel):
    question: str

@app.post("/predict")
async def predict(question: Question):
    try:
        result = await program(question=question.question)
        return {"status": "success", "data": result.toDict()}
    except Exception as e:
        raise HTTPException(status_code=500, detail=str(e))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(port: int, proc: subprocess.Popen[bytes], seconds: float = 120.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("server did not start")


async def _client(
    port: int, path: str, body: bytes, stop: float, latencies: list[float], errors: list[str]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    try:
        while time.perf_counter() < stop:
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            payload = await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            if not head.startswith(b"HTTP/1.1 200") or b"answer" not in payload:
                errors.append(head.split(b"\r\n", 1)[0].decode() + " " + payload[:120].decode())
    finally:
        writer.close()


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


async def _load(
    port: int, path: str, body: bytes, clients: int, seconds: float, server: psutil.Process
) -> dict[str, float]:
    warm: list[float] = []
    await asyncio.gather(
        *(_client(port, path, body, time.perf_counter() + 1.0, warm, []) for _ in range(clients))
    )
    latencies: list[float] = []
    errors: list[str] = []
    cpu_before = _cpu(server)
    start = time.perf_counter()
    await asyncio.gather(
        *(_client(port, path, body, start + seconds, latencies, errors) for _ in range(clients))
    )
    elapsed = time.perf_counter() - start
    cpu = _cpu(server) - cpu_before
    if errors:
        print(f"  {len(errors)} bad responses, first: {errors[0]}", file=sys.stderr)
    return {
        "requests": len(latencies),
        "errors": len(errors),
        "rps": (len(latencies) - len(errors)) / elapsed,
        "p50": p50(latencies),
        "p99": p99(latencies),
        "cpu_ms": cpu / max(1, len(latencies)) * 1e3,
    }


def _run(cmd: list[str], env: dict[str, str], port: int, path: str, body: bytes,
         clients: int, seconds: float) -> dict[str, float]:  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_ready(port, proc)
        return asyncio.run(_load(port, path, body, clients, seconds, psutil.Process(proc.pid)))
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


HANDLER = """
class Echo:
    def echo(self, value):
        return value

def make():
    return Echo()
"""


async def _pool_figures(pool: Any, n: int = 300, concurrent: int = 32) -> dict[str, float]:
    await pool.start()
    for _ in range(20):
        await pool.call("echo", "warm")
    one = []
    for _ in range(n):
        start = time.perf_counter()
        await pool.call("echo", "x")
        one.append(time.perf_counter() - start)
    total = n * 2
    start = time.perf_counter()
    for _ in range(total // concurrent):
        await asyncio.gather(*(pool.call("echo", "x") for _ in range(concurrent)))
    rate = (total // concurrent * concurrent) / (time.perf_counter() - start)
    await pool.close()
    return {"p50": p50(one), "p99": p99(one), "rps": rate}


def _pools(tmp: str, *, with_ray: bool) -> str:
    from dspex.pool import Pool
    from dspex.pool.config import PoolConfig

    Path(tmp, "bench_handler.py").write_text(textwrap.dedent(HANDLER))
    spec = {"target": "bench_handler:make", "size": 2, "pythonpath": [tmp]}
    local = asyncio.run(_pool_figures(Pool(PoolConfig.from_mapping(spec), name="local")))
    try:
        import ray
    except ImportError:
        ray = None
    if ray is None or not with_ray:
        return (
            f"\nLocal process pool round trip (`echo`, size 2): p50 {local['p50'] * 1e3:.3f} ms, "
            f"{local['rps']:,.0f} calls/s with 32 callers (Ray pool: not measured"
            f"{'' if with_ray else ', --no-ray'}; `pip install 'dspex[ray]'`).\n"
        )
    from dspex.pool.ray_backend import RayPool

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, address="local")
    try:
        config = PoolConfig.from_mapping({**spec, "backend": "ray"})
        remote = asyncio.run(_pool_figures(RayPool(config, name="ray")))
    finally:
        ray.shutdown()
    rows = "\n".join(
        f"| {name} | {r['p50'] * 1e3:,.3f} ms | {r['p99'] * 1e3:,.3f} ms | {r['rps']:,.0f} |"
        for name, r in (("local process pool", local), ("Ray pool (local cluster)", remote))
    )
    return f"""
Worker-pool round trip (`echo` handler, size 2): p50/p99 of sequential calls, and calls/s
with 32 concurrent callers.

| pool | p50 | p99 | calls/s |
|---|---:|---:|---:|
{rows}

Ray / local p50: {remote["p50"] / local["p50"]:.1f}x. The Ray backend runs each call through actor
method calls (``start``, which returns a quick call's result, then ``poll`` for longer ones,
so parent callbacks and streaming work as in the local pool): Ray task round trips the
local pool's socket protocol does not pay.
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--no-ray", action="store_true", help="skip the pool round trips")
    args = parser.parse_args()
    lm_proc, lm_url = start_lmserver()
    results: dict[str, dict[str, float]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, "dspex_app.py").write_text(textwrap.dedent(DSPEX_APP))
            Path(tmp, "dspy_app.py").write_text(textwrap.dedent(DSPY_APP))
            env = {**os.environ, "BENCH_LM": lm_url, "PYTHONPATH": tmp,
                   "LITELLM_LOCAL_MODEL_COST_MAP": "True"}  # fmt: skip
            question = {"question": "What is the capital of France?"}
            port = _free_port()
            results["DSPex `dspex serve` (native Predict)"] = _run(
                [sys.executable, "-m", "dspex.cli", "serve", f"{tmp}/dspex_app.py:predict",
                 "--port", str(port), "--max-concurrency", str(args.clients)],
                env, port, "/v1/programs/predict/call", orjson.dumps({"inputs": question}),
                args.clients, args.seconds,
            )  # fmt: skip
            port = _free_port()
            results["DSPy 3.4.1 FastAPI + `dspy.asyncify` (docs recipe)"] = _run(
                [sys.executable, "-m", "uvicorn", "dspy_app:app", "--port", str(port),
                 "--log-level", "warning"],
                env, port, "/predict", orjson.dumps(question), args.clients, args.seconds,
            )  # fmt: skip
            pools = _pools(tmp, with_ray=not args.no_ray)
    finally:
        lm_proc.terminate()
        lm_proc.wait(30)
    ours, theirs = results.values()
    rows = [
        f"| {name} | {r['rps']:,.0f} | {r['p50'] * 1e3:,.1f} ms | {r['p99'] * 1e3:,.1f} ms "
        f"| {r['cpu_ms']:.2f} ms | {int(r['requests']):,} | {int(r['errors'])} |"
        for name, r in results.items()
    ]
    text = f"""
## Serving (issue 16: `dspex serve`)

`.venv/bin/python benchmarks/bench_server.py` — {args.clients} concurrent keep-alive clients
for {args.seconds:g} s (after 1 s of warm-up) POSTing one question to each server on loopback;
the LMServer answers in its own process; every response checked (HTTP 200 with an answer).

| server | req/s | p50 | p99 | server CPU / request | requests | bad |
|---|---:|---:|---:|---:|---:|---:|
{chr(10).join(rows)}

Throughput DSPex / DSPy: **{ours["rps"] / theirs["rps"]:.1f}x**; p50 DSPy / DSPex:
{theirs["p50"] / ours["p50"]:.1f}x; server CPU per request DSPy / DSPex:
**{theirs["cpu_ms"] / ours["cpu_ms"]:.1f}x** (user + system CPU of the server process during
the measured window, divided by the requests it answered: the figure least moved by other
load on the machine). Both servers are one uvicorn process (uvloop) on one event loop.
DSPy's recipe runs each call in ``asyncify``'s thread pool (``async_max_workers``, 8 by
default) through litellm; DSPex's native Predict stays on the event loop with its own HTTP
client. The load generator, both servers and the LM server share the machine's 2 cores
(with other work running), so treat absolute numbers as noisy and the ratio as the result.
{pools}"""
    write("server", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
