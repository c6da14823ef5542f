"""Per-request timeline of LM calls against LMServer: where each round's time over 20 ms goes.

``.venv/bin/python benchmarks/floor/timeline.py [raw|lm|eval] [N] [WIDTH]`` (default: lm 256 16).
The server runs in a child process with timestamps added around its request parsing and reply
timer (by wrapping ``_Connection`` methods, nothing else changed); the client stamps each
request's send and its reply's last byte. Both use ``time.monotonic()`` (one clock for the
machine), so every hop of a round is measured: client send -> server parsed, server timer due ->
fired (lateness), fired -> written, written -> client parsed, client reply -> next send on that
connection. Modes: ``raw`` (a bare asyncio protocol), ``lm`` (``LM.acall``), ``eval``
(``Evaluate`` of ``Predict``). Diagnostic only: the wrappers add a little work to each hop.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

LATENCY = 0.020


def serve() -> None:
    """The child: LMServer with timestamps; prints its URL, dumps the log on "dump\\n"."""
    from dspex.testing import server as srv

    log: list[tuple[float, ...]] = []
    conn: Any = srv._Connection
    complete, reply_at, reply = conn.on_message_complete, conn._reply_at, conn._reply

    def on_message_complete(self: Any) -> None:
        self._t_parsed = time.monotonic()
        complete(self)

    def _reply_at(self: Any, response: Any, due: float) -> None:
        self._t_due = due
        reply_at(self, response, due)

    def _reply(self: Any, response: Any) -> None:
        fired = time.monotonic()
        reply(self, response)
        log.append((self._t_parsed, self._t_due, fired, time.monotonic()))

    conn.on_message_complete, conn._reply_at, conn._reply = (
        on_message_complete,
        _reply_at,
        _reply,
    )
    server = srv.LMServer(latency=LATENCY).start()
    print(server.url, flush=True)
    for line in sys.stdin:
        if line.strip() != "dump":
            break
        print(json.dumps(log), flush=True)
        log.clear()
    server.stop()


def main(mode: str, n: int, width: int) -> None:
    from dspex.lm import transport

    sent: list[tuple[float, float, int]] = []  # (send, reply parsed, connection)
    conn: Any = transport._Connection
    start, complete = conn.start, conn.on_message_complete

    def _start(self: Any, message: bytes, stream: bool) -> None:
        self._t_send = time.monotonic()
        start(self, message, stream)

    def _complete(self: Any) -> None:
        sent.append((self._t_send, time.monotonic(), id(self)))
        complete(self)

    conn.start, conn.on_message_complete = _start, _complete
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    url = child.stdout.readline().strip()

    import orjson

    import dspex
    from dspex._sync import run_sync
    from dspex.evaluate import Evaluate, answer_exact_match

    lm = dspex.LM("openai/test", api_base=url, api_key="k", cache=False, num_retries=0)
    dspex.configure(lm=lm)
    dev = [
        dspex.Example(question=f"question {i}", answer="x").with_inputs("question")
        for i in range(n)
    ]
    evaluate = Evaluate(devset=dev, metric=answer_exact_match, num_threads=width)
    program = dspex.Predict("question -> answer")
    target = transport.Target(url + "/chat/completions", {"content-type": "application/json"})
    messages = [
        target.post(
            orjson.dumps({"model": "test", "messages": [{"role": "user", "content": f"q {i}"}]})
        )
        for i in range(n)
    ]
    idle: list[Any] = []

    class Raw(asyncio.Protocol):
        def connection_made(self, t: Any) -> None:
            self.t, self.buf, self.done = t, b"", None

        def data_received(self, data: bytes) -> None:
            self.buf += data
            head = self.buf.find(b"\r\n\r\n")
            if head < 0:
                return
            at = self.buf.find(b"content-length: ", 0, head)
            if len(self.buf) >= head + 4 + int(self.buf[at + 16 : self.buf.find(b"\r\n", at)]):
                self.buf = b""
                sent.append((self._t_send, time.monotonic(), id(self)))
                self.done.set_result(None)  # type: ignore[attr-defined]

    async def raw_one(i: int) -> None:
        loop = asyncio.get_running_loop()
        if idle:
            c = idle.pop()
        else:
            host, port = url.split("//")[1].split("/")[0].split(":")
            c = (await loop.create_connection(Raw, host, int(port)))[1]
        c.done = loop.create_future()
        c._t_send = time.monotonic()
        c.t.write(messages[i])
        await c.done
        idle.append(c)

    async def fan(one: Any) -> None:
        slots = asyncio.Semaphore(width)

        async def run(i: int) -> None:
            async with slots:
                await one(i)

        await asyncio.gather(*(run(i) for i in range(n)))

    def lm_one(i: int) -> Any:
        return lm.acall(messages=[{"role": "user", "content": f"question {i}"}])

    def run() -> None:
        if mode == "eval":
            evaluate(program)
        else:
            run_sync(fan(raw_one if mode == "raw" else lm_one))

    def dump() -> list[list[float]]:
        child.stdin.write("dump\n")  # type: ignore[union-attr]
        child.stdin.flush()  # type: ignore[union-attr]
        return json.loads(child.stdout.readline())  # type: ignore[union-attr,no-any-return]

    run()
    dump()
    sent.clear()
    t0 = time.perf_counter()
    run()
    wall = time.perf_counter() - t0
    server_log = sorted(dump())
    child.stdin.write("quit\n")
    child.stdin.flush()
    child.wait()

    parsed = [s[0] for s in server_log]
    hops: dict[str, list[float]] = {
        k: [] for k in ("up", "timer late", "fire->written", "written->client")
    }
    for send, recv, _ in sorted(sent):
        k = bisect.bisect_left(parsed, send)
        for s in server_log[
            k : k + 40
        ]:  # this request's entry: parsed after send, written before recv
            if s[3] <= recv + 1e-3:
                hops["up"].append(s[0] - send)
                hops["timer late"].append(s[2] - s[1])
                hops["fire->written"].append(s[3] - s[2])
                hops["written->client"].append(recv - s[3])
                break
    by_conn: dict[int, list[tuple[float, float]]] = {}
    for send, recv, cid in sent:
        by_conn.setdefault(cid, []).append((send, recv))
    gaps = [
        b[0] - a[1]
        for v in by_conn.values()
        for a, b in zip(sorted(v), sorted(v)[1:], strict=False)
    ]
    ideal = n * LATENCY / width
    print(
        f"{mode}: {n} requests, {width} in flight: {wall * 1e3:.1f} ms ({100 * (wall / ideal - 1):+.1f}%)"
    )
    names = {
        "up": "client send -> server parsed",
        "timer late": "server reply timer late",
        "fire->written": "timer fired -> reply written",
        "written->client": "reply written -> client parsed it",
    }
    for key, xs in hops.items():
        print(
            f"  {names[key]:38s} mean {statistics.fmean(xs) * 1e3:.3f} ms, median {statistics.median(xs) * 1e3:.3f} ms"
        )
    print(
        f"  {'client reply -> next send (same conn)':38s} mean {statistics.fmean(gaps) * 1e3:.3f} ms, median {statistics.median(gaps) * 1e3:.3f} ms"
    )


if __name__ == "__main__":
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    if sys.argv[1:2] == ["--serve"]:
        serve()
    else:
        args = sys.argv[1:]
        main(
            args[0] if args else "lm",
            int(args[1]) if len(args) > 1 else 256,
            int(args[2]) if len(args) > 2 else 16,
        )
