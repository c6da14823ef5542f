"""Pipeline orchestration overhead and a 20-way native fan-out vs ``dspy.Parallel`` (issue 7).

One run, one LMServer in its own process, cache off everywhere. Measures:
- orchestration overhead per native step: a pipeline of 100 trivial function steps vs the
  same 100 function calls made directly (target ≤ 20 µs per step);
- a 20-way ``parallel([...])`` of native ``dspex.Predict`` calls vs the same program written
  with DSPy's ``dspy.Parallel`` (20 threads) against the same server (target ≥ 5x faster).
"""

from __future__ import annotations

import asyncio
import time

from _common import ms, p50, p99, start_lmserver, us, write

STEPS = 100
FAN = 20
ROUNDS = 15


def overhead() -> tuple[float, float, float, float]:
    import dspex
    from dspex import pipeline as pl

    def bump(x: int) -> dict[str, int]:
        return {"x": x + 1}

    pipe = dspex.pipeline([pl.step(bump, name=f"s{i}") for i in range(STEPS)])
    one = dspex.pipeline([pl.step(bump)])
    loop = asyncio.new_event_loop()

    def direct() -> None:
        state = {"x": 0}
        for _ in range(STEPS):
            state.update(bump(**{"x": state["x"]}))

    def timed(fn: object, n: int) -> list[float]:
        out = []
        for _ in range(n):
            start = time.perf_counter()
            fn()  # type: ignore[operator]
            out.append(time.perf_counter() - start)
        return out

    for _ in range(50):
        loop.run_until_complete(pipe.arun(x=0))
    runs = timed(lambda: loop.run_until_complete(pipe.arun(x=0)), 300)
    singles = timed(lambda: loop.run_until_complete(one.arun(x=0)), 2000)
    directs = timed(direct, 300)
    loop.close()
    per_step = (p50(runs) - p50(directs)) / STEPS
    return per_step, p50(runs), p50(singles), p50(directs)


def fanout(url: str) -> dict[str, list[float]]:
    import dspy

    import dspex
    from dspex import pipeline as pl

    lm = dspex.LM("openai/test", api_base=url, api_key="k", cache=False)
    dspex.configure(lm=lm)
    pipe = dspex.pipeline(
        [
            pl.parallel(
                [pl.step(dspex.Predict("question -> answer"), name=f"q{i}") for i in range(FAN)]
            )
        ]
    )
    dlm = dspy.LM("openai/test", api_base=url, api_key="k", cache=False)
    dspy.configure(lm=dlm)
    dprog = dspy.Predict("question -> answer")
    examples = [dspy.Example(question="q").with_inputs("question") for _ in range(FAN)]
    runner = dspy.Parallel(num_threads=FAN, disable_progress_bar=True)

    loop = asyncio.new_event_loop()
    samples: dict[str, list[float]] = {"native": [], "native_sync": [], "dspy": []}

    def once(name: str) -> None:
        start = time.perf_counter()
        if name == "native":
            result = loop.run_until_complete(pipe.arun(question="q"))
            assert result.ok
        elif name == "native_sync":
            assert pipe.run(question="q").ok
        else:
            out = runner([(dprog, ex) for ex in examples])
            assert len(out) == FAN and all(o is not None for o in out)
        samples[name].append(time.perf_counter() - start)

    for name in samples:  # warm up connections and threads
        for _ in range(3):
            once(name)
        samples[name].clear()
    for _ in range(ROUNDS):  # interleaved so machine noise hits every contender alike
        for name in samples:
            once(name)
    loop.close()
    return samples


def main() -> None:
    per_step, run100, run1, direct100 = overhead()
    proc, url = start_lmserver()
    try:
        samples = fanout(url)
    finally:
        proc.terminate()
        proc.wait()
    native, native_sync, dspy_par = (p50(samples[k]) for k in ("native", "native_sync", "dspy"))
    speedup = dspy_par / native
    met = "met" if per_step <= 20e-6 else "NOT met"
    met2 = "met" if speedup >= 5 else "NOT met"
    text = f"""
## Pipelines (`dspex.pipeline`)

`.venv/bin/python benchmarks/bench_pipeline.py` — LMServer in its own process, cache off.

Orchestration overhead (trivial function steps; timeouts/retries off, no telemetry handler):

| measure | value |
|---|---:|
| pipeline of {STEPS} function steps, `await arun` p50 | {us(run100)} |
| the same {STEPS} calls made directly (subtracted) | {us(direct100)} |
| **overhead per native step** | **{us(per_step)}** (target ≤ 20 µs: {met}) |
| one-step pipeline, whole run (fixed cost per run) | {us(run1)} |

{FAN}-way fan-out of `Predict("question -> answer")`, {ROUNDS} interleaved rounds, p50 (p99):

| program | wall time |
|---|---:|
| `dspex.pipeline([parallel([...{FAN} native Predict...])])`, `await arun` | {ms(native)} ({ms(p99(samples["native"]))}) |
| same pipeline, sync `run` | {ms(native_sync)} ({ms(p99(samples["native_sync"]))}) |
| `dspy.Parallel(num_threads={FAN})` over {FAN} `dspy.Predict` calls (DSPy 3.4.1) | {ms(dspy_par)} ({ms(p99(samples["dspy"]))}) |
| **speed-up (dspy.Parallel / pipeline)** | **{speedup:.1f}x** (target ≥ 5x: {met2}) |
"""
    write("pipeline", text)


if __name__ == "__main__":
    main()
