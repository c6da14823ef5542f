"""Evaluate: 256 examples at 16-way concurrency against an LM with 20 ms latency.

One LMServer in its own process answers every request after 20 ms; cache off everywhere.
The ideal wall time is 256 x 20 ms / 16 = 320 ms (every slot always busy, zero overhead).
Measured in alternating rounds (so machine load hits both alike): ``dspex.Evaluate`` (one
event loop, 16 in flight) and ``dspy.Evaluate`` (16 threads), the same program shape
(``Predict("question -> answer")``), the same metric and devset; median of the rounds.
Beside them, the floors (``_common.Floors``): 256 bare timer waits, 256 raw ``LM.acall``s and
256 plain httpx POSTs, 16 in flight, so the reader sees what is framework overhead and what
the machine, the server and the HTTP client cost.
"""

from __future__ import annotations

import statistics
import time

from _common import Floors, load, start_lmserver, write

N_EXAMPLES = 256
THREADS = 16
LATENCY = 0.020
ROUNDS = 5
IDEAL = N_EXAMPLES * LATENCY / THREADS


def main() -> None:
    proc, url = start_lmserver(latency=LATENCY)
    try:
        import dspy

        import dspex
        from dspex.evaluate import Evaluate, answer_exact_match

        lm = dspex.LM("openai/test", api_base=url, api_key="k", cache=False, num_retries=0)
        dlm = dspy.LM("openai/test", api_base=url, api_key="k", cache=False, num_retries=0)
        dspex.configure(lm=lm)
        dspy.configure(lm=dlm)
        dev = [
            dspex.Example(question=f"question {i}", answer="x").with_inputs("question")
            for i in range(N_EXAMPLES)
        ]
        ddev = [dspy.Example(**e.toDict()).with_inputs("question") for e in dev]
        ours = Evaluate(devset=dev, metric=answer_exact_match, num_threads=THREADS)
        theirs = dspy.Evaluate(
            devset=ddev, metric=dspy.evaluate.answer_exact_match, num_threads=THREADS
        )
        program, dprogram = dspex.Predict("question -> answer"), dspy.Predict("question -> answer")

        def timed(fn: object) -> float:
            start = time.perf_counter()
            fn()  # type: ignore[operator]
            return time.perf_counter() - start

        timed(lambda: ours(program))  # warm up connection pools and imports
        timed(lambda: theirs(dprogram))
        floors = Floors(lm, url, N_EXAMPLES, THREADS, LATENCY)
        floors.raw_lm(), floors.httpx()
        runs: dict[str, list[float]] = {k: [] for k in ("ours", "theirs", "lm", "httpx", "timer")}
        for _ in range(ROUNDS):
            runs["ours"].append(timed(lambda: ours(program)))
            runs["theirs"].append(timed(lambda: theirs(dprogram)))
            runs["lm"].append(floors.raw_lm())
            runs["httpx"].append(floors.httpx())
            runs["timer"].append(floors.timer())
        med = {k: statistics.median(v) for k, v in runs.items()}
        floors.close()
    finally:
        proc.terminate()
        proc.wait()

    def row(name: str, t: float, xs: list[float]) -> str:
        over = 100 * (t / IDEAL - 1)
        spread = f"{min(xs) * 1e3:,.0f}-{max(xs) * 1e3:,.0f} ms"
        return f"| {name} | {t * 1e3:,.1f} ms | {over:+.1f}% | {spread} |"

    write(
        "evaluate",
        f"""
## Evaluate (issue: native Evaluate and module library)

`.venv/bin/python benchmarks/bench_evaluate.py` — {N_EXAMPLES} examples, {THREADS}-way
concurrency, LMServer in its own process answering after {LATENCY * 1e3:.0f} ms, cache off;
ideal = {N_EXAMPLES} x {LATENCY * 1e3:.0f} ms / {THREADS} = {IDEAL * 1e3:.0f} ms. Median of
{ROUNDS} alternating rounds after one warm-up run each.

| evaluator | wall time (median) | over ideal | range |
|---|---:|---:|---:|
{row("dspex.Evaluate (asyncio, 16 in flight)", med["ours"], runs["ours"])}
{row("dspy.Evaluate 3.4.1 (16 threads)", med["theirs"], runs["theirs"])}
{row("floor: 256 raw `LM.acall`s (DSPex HTTP client), 16 in flight", med["lm"], runs["lm"])}
{row("floor: 256 plain `httpx.AsyncClient` POSTs, pool of 16", med["httpx"], runs["httpx"])}
{row("floor: 256 bare `asyncio.sleep(20 ms)`, 16 in flight, no I/O", med["timer"], runs["timer"])}

DSPy / DSPex wall time: **{med["theirs"] / med["ours"]:.2f}x**; DSPex / raw-LM floor:
**{med["ours"] / med["lm"]:.2f}x**; DSPex / httpx floor: **{med["ours"] / med["httpx"]:.2f}x**.
Target (issue): within 5% of the ideal —
{"met" if med["ours"] <= IDEAL * 1.05 else "not met in this run"}. The floors are what the
machine (timer row: no server, no HTTP), the server plus our HTTP client, and plain httpx take
now; the ideal assumes all of them cost nothing. Measured
{time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())} on a shared 2-core machine, 1-minute load
average {load()} at the end (other jobs running): absolute figures are noisy, ratios from the
same run are the signal.
""",
    )


if __name__ == "__main__":
    main()
