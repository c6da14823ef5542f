"""Program runtime: ``Module.batch`` throughput and ``streamify`` first-chunk latency, DSPex vs
DSPy 3.4.1 in the same run, against one LMServer (own process) answering after 20 ms.

- batch: 256 calls at 16-way concurrency. Ideal wall time = 256 x 20 ms / 16 = 320 ms. Rows:
  ``dspex.Predict.batch`` (native async tasks on one loop), a user ``dspex.Module`` with a sync
  ``forward`` (worker threads), and DSPy's ``Module.batch`` (its thread pool) on the same
  programs. Best of 3 rounds each (interleaved), since the machine is shared.
- streamify: time from the call to the first ``StreamResponse`` chunk of ChainOfThought's
  ``reasoning``, p50
  over 30 calls, both libraries (each streams from the same server).

Run: ``.venv/bin/python benchmarks/bench_runtime.py`` (needs the ``dspy`` extra).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import dspex
from _common import Floors, load, ms, start_lmserver, write

N, WIDTH, LATENCY = 256, 16, 0.020
IDEAL = N * LATENCY / WIDTH


def user_module(d: Any) -> Any:
    class QA(d.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.qa = d.Predict("question -> answer")

        def forward(self, question: str) -> Any:
            return self.qa(question=question)

    return QA()


def timed_batch(d: Any, program: Any, lm: Any, tag: str) -> float:
    examples = [d.Example(question=f"{tag} q{i}").with_inputs("question") for i in range(N)]
    with d.context(lm=lm):
        start = time.perf_counter()
        extra = {"disable_progress_bar": True} if d.__name__ == "dspy" else {}
        out = program.batch(examples, num_threads=WIDTH, **extra)
        took = time.perf_counter() - start
    assert len(out) == N and all(o is not None for o in out), "a batch call failed"
    return took


def first_chunk(d: Any, lm: Any, rounds: int = 30) -> float:
    cot = d.ChainOfThought("question -> answer")

    async def one(i: int) -> float:
        # a fresh listener per call: DSPy's listeners do not stream again once a field ended
        listener = d.streaming.StreamListener(signature_field_name="reasoning")
        stream = d.streamify(cot, stream_listeners=[listener])
        start = time.perf_counter()
        first = None
        async for item in stream(question=f"stream {i}"):
            if first is None and isinstance(item, d.streaming.StreamResponse):
                first = time.perf_counter() - start
        assert first is not None, "no chunk streamed"
        return first

    async def run() -> list[float]:
        return [await one(i) for i in range(rounds)]

    with d.context(lm=lm):
        return statistics.median(asyncio.run(run()))


def main() -> None:
    import dspy

    proc, url = start_lmserver(LATENCY)
    try:
        ours_lm = dspex.LM("openai/test", api_base=url, api_key="k", cache=False)
        dspy_lm = dspy.LM("openai/test", api_base=url, api_key="k", cache=False)
        floors = Floors(ours_lm, url, N, WIDTH, LATENCY)
        floors.raw_lm()
        rows: dict[str, list[float]] = {
            k: [] for k in ("predict", "user", "dspy_predict", "dspy_user", "lm", "timer")
        }
        for r in range(3):  # interleaved rounds; keep the best of each
            rows["lm"].append(floors.raw_lm())
            rows["timer"].append(floors.timer())
            rows["predict"].append(
                timed_batch(dspex, dspex.Predict("question -> answer"), ours_lm, f"a{r}")
            )
            rows["dspy_predict"].append(
                timed_batch(dspy, dspy.Predict("question -> answer"), dspy_lm, f"b{r}")
            )
            rows["user"].append(timed_batch(dspex, user_module(dspex), ours_lm, f"c{r}"))
            rows["dspy_user"].append(timed_batch(dspy, user_module(dspy), dspy_lm, f"d{r}"))
        best = {k: min(v) for k, v in rows.items()}
        ours_first = first_chunk(dspex, ours_lm)
        dspy_first = first_chunk(dspy, dspy_lm)
    finally:
        proc.terminate()
        proc.wait()

    lines = [
        "## Program runtime (`Module.batch`, `streamify`) — `benchmarks/bench_runtime.py`",
        "",
        f"{N} calls, {WIDTH}-way, LMServer (own process) answering after {LATENCY * 1e3:.0f} ms; "
        f"ideal wall time {ms(IDEAL)}. Best of 3 interleaved rounds. Shared, loaded machine "
        f"(1-minute load average {load()} at the end): absolute figures are noisy, ratios are "
        "from the same run. Floors in the same rounds: "
        f"{N} raw `LM.acall`s at {WIDTH} in flight (server + DSPex HTTP client, no module) "
        f"{ms(best['lm'])} ({best['lm'] / IDEAL:.2f}x ideal); {N} bare "
        f"`asyncio.sleep({LATENCY * 1e3:.0f} ms)` at {WIDTH} in flight (no I/O: the machine's "
        f"timers and scheduler) {ms(best['timer'])} ({best['timer'] / IDEAL:.2f}x ideal).",
        "",
        "| program | DSPex | vs ideal | vs raw-LM floor | DSPy 3.4.1 | DSPy / DSPex |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| `Predict.batch` (native async tasks) | {ms(best['predict'])} | "
        f"{best['predict'] / IDEAL:.2f}x | {best['predict'] / best['lm']:.2f}x | "
        f"{ms(best['dspy_predict'])} | {best['dspy_predict'] / best['predict']:.2f}x |",
        f"| user `Module` with sync `forward` (threads) | {ms(best['user'])} | "
        f"{best['user'] / IDEAL:.2f}x | {best['user'] / best['lm']:.2f}x | "
        f"{ms(best['dspy_user'])} | {best['dspy_user'] / best['user']:.2f}x |",
        "",
        "| streamify first chunk (p50 of 30) | DSPex | DSPy 3.4.1 | DSPy / DSPex |",
        "| --- | --- | --- | --- |",
        f"| `ChainOfThought`, listener on `reasoning` | {ms(ours_first)} | {ms(dspy_first)} | "
        f"{dspy_first / ours_first:.2f}x |",
    ]
    write("bench_runtime", "\n".join(lines))


if __name__ == "__main__":
    main()
