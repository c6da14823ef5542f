"""Where Evaluate's time over the ideal goes: every client against every server, one run.

``bench_evaluate.py`` measures ``dspex.Evaluate`` (256 examples, 16 in flight, 20 ms LM) against
the ideal of 320 ms. This script splits the gap: the same 256 requests at 16 in flight, each
answered 20 ms after its last byte arrived, by

- clients: a minimal C client (``floor/floor.c``: epoll, one blocking-free loop, no parsing
  beyond Content-Length), a minimal asyncio client (a bare ``asyncio.Protocol``, no HTTP
  library), 256 raw ``LM.acall``s and ``dspex.Evaluate`` of ``Predict("question -> answer")``;
- servers: the C server of ``floor/floor.c`` (a timerfd per due reply, a canned reply) and
  ``LMServer`` in its own process (the server every benchmark uses);

so the C-client x C-server cell is what the machine itself allows (kernel, loopback TCP, timer
wake-ups), the C-client x LMServer cell what our server adds, and each Python client row what
asyncio, the LM stack and Evaluate add. Client CPU per request (``time.process_time``) is
printed beside each Python cell. Cells are measured in alternating rounds (median); the C cells
need a C compiler (``cc``), else they are skipped.

Scheduling noise from other jobs dominates on a shared machine: run it on a quiet machine, or
to see the steady-state costs without other jobs' preemption, under a real-time policy for
both processes (``chrt -f 10 .venv/bin/python benchmarks/bench_evaluate_floor.py``; the
subprocesses inherit it).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _common import load, start_lmserver, write

N, WIDTH, LATENCY, ROUNDS = 256, 16, 0.020, 5
IDEAL = N * LATENCY / WIDTH
HERE = Path(__file__).resolve().parent


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_c() -> str | None:
    """The compiled ``floor/floor.c`` (``None`` without a C compiler)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    out = os.path.join(tempfile.mkdtemp(prefix="dspex-floor-"), "floor")
    subprocess.run([cc, "-O2", "-o", out, str(HERE / "floor" / "floor.c")], check=True)
    return out


def start_c_server(binary: str) -> tuple[subprocess.Popen[bytes], str]:
    port = _port()
    proc = subprocess.Popen(
        [binary, "server", str(port), str(int(LATENCY * 1e6))], stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    proc.stdout.readline()  # "ready"
    return proc, f"http://127.0.0.1:{port}/v1"


def c_client(binary: str, url: str) -> list[float]:
    """``ROUNDS`` wall times (s) of the C client (after one warm-up round of its own)."""
    port = url.rsplit(":", 1)[1].split("/")[0]
    out = subprocess.run(
        [binary, "client", port, str(N), str(WIDTH), str(ROUNDS)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [float(x) / 1e3 for x in out.split()]


class _Raw(asyncio.Protocol):
    """A bare HTTP/1.1 client connection: write a request, wake when Content-Length is met."""

    def __init__(self) -> None:
        self.buf = b""
        self.done: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        head = self.buf.find(b"\r\n\r\n")
        if head < 0:
            return
        at = self.buf.lower().find(b"content-length: ", 0, head)
        size = int(self.buf[at + 16 : self.buf.find(b"\r\n", at)])
        if len(self.buf) >= head + 4 + size and self.done is not None:
            self.buf = b""
            self.done.set_result(None)


class PythonClients:
    """The Python clients of one server, on the thread's ``run_sync`` loop."""

    def __init__(self, url: str) -> None:
        import orjson

        import dspex
        from dspex.evaluate import Evaluate, answer_exact_match
        from dspex.lm.transport import Target

        self.url = url
        self.lm = dspex.LM("openai/test", api_base=url, api_key="k", cache=False, num_retries=0)
        dev = [
            dspex.Example(question=f"question {i}", answer="x").with_inputs("question")
            for i in range(N)
        ]
        self.evaluate = Evaluate(devset=dev, metric=answer_exact_match, num_threads=WIDTH)
        self.program = dspex.Predict("question -> answer")
        target = Target(url + "/chat/completions", {"content-type": "application/json"})
        self.messages = [
            target.post(
                orjson.dumps(
                    {"model": "test", "messages": [{"role": "user", "content": f"question {i}"}]}
                )
            )
            for i in range(N)
        ]
        self.idle: list[_Raw] = []

    async def _fan(self, one: Callable[[int], object]) -> None:
        slots = asyncio.Semaphore(WIDTH)

        async def run(i: int) -> None:
            async with slots:
                await one(i)  # type: ignore[misc]

        await asyncio.gather(*(run(i) for i in range(N)))

    async def _raw_one(self, i: int) -> None:
        loop = asyncio.get_running_loop()
        if self.idle:
            conn = self.idle.pop()
        else:
            host, port = self.url.split("//")[1].split("/")[0].split(":")
            _, conn = await loop.create_connection(_Raw, host, int(port))
        conn.done = loop.create_future()
        conn.transport.write(self.messages[i])  # type: ignore[attr-defined]
        await conn.done
        self.idle.append(conn)

    def raw(self) -> None:
        from dspex._sync import run_sync

        run_sync(self._fan(self._raw_one))

    def lm_calls(self) -> None:
        from dspex._sync import run_sync

        def one(i: int) -> object:
            return self.lm.acall(messages=[{"role": "user", "content": f"question {i}"}])

        run_sync(self._fan(one))

    def evaluate_run(self) -> None:
        import dspex

        with dspex.context(lm=self.lm):
            self.evaluate(self.program)


def main() -> None:
    binary = build_c()
    servers: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    servers["LMServer"] = start_lmserver(latency=LATENCY)
    if binary is not None:
        servers["C server"] = start_c_server(binary)
    cells: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}
    try:
        clients = {name: PythonClients(url) for name, (_, url) in servers.items()}
        kinds: dict[str, Callable[[PythonClients], None]] = {
            "minimal asyncio client (no HTTP library)": PythonClients.raw,
            "256 raw `LM.acall`s": PythonClients.lm_calls,
            "`dspex.Evaluate` (Predict)": PythonClients.evaluate_run,
        }
        for client in clients.values():  # warm up connections and imports
            for fn in kinds.values():
                fn(client)
        for _ in range(ROUNDS):
            for server, client in clients.items():
                for kind, fn in kinds.items():
                    c0, t0 = time.process_time(), time.perf_counter()
                    fn(client)
                    wall, used = time.perf_counter() - t0, time.process_time() - c0
                    cells.setdefault((kind, server), []).append(wall)
                    cpu.setdefault((kind, server), []).append(used / N)
        if binary is not None:
            for server, (_, url) in servers.items():
                cells[("minimal C client", server)] = c_client(binary, url)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait()

    order = ["LMServer", "C server"] if binary is not None else ["LMServer"]
    rows = ["minimal C client", *kinds] if binary is not None else list(kinds)

    def cell(kind: str, server: str) -> str:
        xs = cells.get((kind, server))
        if not xs:
            return "—"
        t = statistics.median(xs)
        text = f"{t * 1e3:,.1f} ms ({100 * (t / IDEAL - 1):+.1f}%)"
        if (kind, server) in cpu:
            text += f", {statistics.median(cpu[(kind, server)]) * 1e6:,.0f} µs CPU/req"
        return text

    table = "\n".join(f"| {k} | " + " | ".join(cell(k, s) for s in order) + " |" for k in rows)
    policy = os.sched_getscheduler(0)
    sched = {os.SCHED_FIFO: "SCHED_FIFO", os.SCHED_RR: "SCHED_RR"}.get(policy, "default (CFS)")
    write(
        "evaluate_floor",
        f"""
## Evaluate's floor: every client against every server

`.venv/bin/python benchmarks/bench_evaluate_floor.py` — {N} requests, {WIDTH} in flight, each
answered {LATENCY * 1e3:.0f} ms after its last byte arrived; ideal {IDEAL * 1e3:.0f} ms. Median
of {ROUNDS} alternating rounds (C client: {ROUNDS} rounds after its own warm-up); client CPU per
request from `time.process_time` (Python clients only).

| client \\ server | {" | ".join(order)} |
|---|{"---:|" * len(order)}
{table}

Scheduling policy of this run: {sched}. Measured {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())},
1-minute load average {load()} at the end.
""",
    )


if __name__ == "__main__":
    sys.exit(main())
