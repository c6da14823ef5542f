"""DSPy through the pool vs the same DSPy call in process (issue: DSPy backend).

One run, one LMServer in its own process, cache off everywhere. Measures:
- per-call latency of ``dspy.Predict`` in this process vs ``dspex.Predict(implementation="dspy")``
  (real DSPy in a pool worker) — the difference is the pool + bridge overhead (target ≤ +0.25 ms
  p50), taken per A/B round and summarized with its spread (the machine is shared and noisy);
- parent CPU per bridged call;
- first-call latency of a new remote module on a warm pool (object created on the way);
- cold start: pool start (template imports DSPy, forks workers) to the first prediction;
- native ``dspex.Predict`` for reference.
"""

from __future__ import annotations

import asyncio
import os
import random
import resource
import statistics
import time

from _common import ms, p50, p99, per_call, start_lmserver, write

SPEC = "question -> answer"
N = 400
ROUNDS = 40  # A/B rounds
K = 15  # calls per contender per round


def main() -> None:
    proc, url = start_lmserver()
    try:
        import dspy

        import dspex
        from dspex.pool import shutdown_pools

        lm = dspex.LM("openai/test", api_base=url, api_key="k", cache=False)
        dspex.configure(lm=lm)

        started = time.perf_counter()
        remote = dspex.Predict(SPEC, implementation="dspy")
        remote(question="warm up")
        cold = time.perf_counter() - started

        dlm = dspy.LM("openai/test", api_base=url, api_key="k", cache=False)
        dspy.configure(lm=dlm)
        in_process = dspy.Predict(SPEC)
        native = dspex.Predict(SPEC)

        rows = {}
        # A/B rounds: each round times K bridged calls and K of the same call in process,
        # back to back (which goes first alternates by round), so load that drifts on a
        # shared machine hits both sides of a round alike. The overhead is the median over
        # rounds of (p50 bridged - p50 in process); its spread is the interquartile range of
        # the per-round differences and a bootstrap 95% interval of that median.
        loop = asyncio.new_event_loop()
        sides = {
            "dspy": lambda: in_process(question="q"),
            "pool": lambda: remote(question="q"),
            "pool_async": lambda: loop.run_until_complete(remote.acall(question="q")),
            "native": lambda: native(question="q"),
        }
        samples: dict[str, list[float]] = {name: [] for name in sides}
        diffs: dict[str, list[float]] = {"pool": [], "pool_async": []}
        for r in range(ROUNDS):
            order = list(sides) if r % 2 == 0 else list(reversed(sides))
            p50s = {}
            for name in order:
                xs = per_call(sides[name], K, warmup=2)
                samples[name] += xs
                p50s[name] = p50(xs)
            for name in diffs:
                diffs[name].append(p50s[name] - p50s["dspy"])
        for name, xs in samples.items():
            rows[name] = (p50(xs), p99(xs))
        # parent CPU per call (all threads of this process; the worker's CPU not counted)
        cpu = {}
        pid = remote._dspy_session.worker_pid
        for name in ("dspy", "pool"):
            before, worker_before = _cpu(), _proc_cpu(pid)
            per_call(sides[name], N // 2, warmup=5)
            cpu[name] = (_cpu() - before) / (N // 2)
            if name == "pool":
                cpu["worker"] = (_proc_cpu(pid) - worker_before) / (N // 2)
        loop.close()

        firsts = []
        for _ in range(30):
            module = dspex.Predict(SPEC, implementation="dspy")
            start = time.perf_counter()
            module(question="q")
            firsts.append(time.perf_counter() - start)
            module._dspy_session.close()
        shutdown_pools()
    finally:
        proc.terminate()
        proc.wait()

    sync, asyn = _summary(diffs["pool"]), _summary(diffs["pool_async"])
    text = f"""
## DSPy backend (`implementation="dspy"`)

`.venv/bin/python benchmarks/bench_bridge.py` — LMServer in its own process, cache off;
{ROUNDS} A/B rounds of {K} sequential calls per contender (order alternating by round); p50 (p99)
over all rounds.

| call | latency |
|---|---:|
| `dspy.Predict` in this process (DSPy 3.4.1) | {ms(rows["dspy"][0])} ({ms(rows["dspy"][1])}) |
| `dspex.Predict(implementation="dspy")`, sync | {ms(rows["pool"][0])} ({ms(rows["pool"][1])}) |
| `dspex.Predict(implementation="dspy")`, `acall` | {ms(rows["pool_async"][0])} ({ms(rows["pool_async"][1])}) |
| `dspex.Predict` native (reference) | {ms(rows["native"][0])} ({ms(rows["native"][1])}) |
| first call of a new remote module, warm pool | {ms(p50(firsts))} ({ms(p99(firsts))}) |
| cold start: pool start + DSPy import + first prediction | {ms(cold)} |

Pool + bridge overhead over the same DSPy call in process — median over {ROUNDS} rounds of
the per-round p50 difference [interquartile range of the differences; bootstrap 95% interval
of the median] (target ≤ +0.25 ms):

| | overhead |
|---|---:|
| sync | {sync} |
| async (`acall`) | {asyn} |

CPU per call (user + system): `dspy.Predict` in this process {ms(cpu["dspy"])}; bridged
call: this process (all threads) {ms(cpu["pool"])} — what the parent pays to send it and take
the answer back — and the worker {ms(cpu["worker"])} (the DSPy call plus the host's work).
One run on a shared 2-core machine.
"""
    write("bridge", text)


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _proc_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` (Linux ``/proc``)."""
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _summary(diffs: list[float]) -> str:
    """``+m ms [q1, q3; lo, hi]``: the median difference, its quartiles, a bootstrap 95% CI."""
    rng = random.Random(0)
    meds = sorted(statistics.median(rng.choices(diffs, k=len(diffs))) for _ in range(2000))
    q1, _, q3 = statistics.quantiles(diffs, n=4)
    lo, hi = meds[int(0.025 * len(meds))], meds[int(0.975 * len(meds)) - 1]
    return (
        f"{statistics.median(diffs) * 1e3:+.3f} ms [IQR {q1 * 1e3:+.3f} … {q3 * 1e3:+.3f}; "
        f"95% CI {lo * 1e3:+.3f} … {hi * 1e3:+.3f}]"
    )


if __name__ == "__main__":
    main()
