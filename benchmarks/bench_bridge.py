"""DSPy through the pool vs the same DSPy call in process (issue: DSPy backend).

One run, one LMServer in its own process, cache off everywhere, and the same DSPy LM on both
sides (the in-process baseline is built from the spec the worker gets, by the worker's own
``dspex.bridge.host.dspy_lm``). Measures:
- per-call latency of ``dspy.Predict`` in this process vs ``dspex.Predict(implementation="dspy")``
  (real DSPy in a pool worker) — the difference is the pool + bridge overhead (target ≤ +0.25 ms
  p50), taken per A/B round and summarized with its spread (the machine is shared and noisy);
- the same DSPy call run back to back *inside* a worker of the same kind (``_bridge_probe``),
  timed there: splits the overhead into "being a worker process" and "the bridge";
- CPU per call, in interleaved blocks: in process; bridged (parent, all threads, and worker);
  inside the worker;
- the host's own work in process (``DSPyHost.call`` vs the same DSPy call, CPU);
- first-call latency of a new remote module on a warm pool; cold start;
- native ``dspex.Predict`` for reference.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import time
from pathlib import Path
from typing import Any

from _common import load, ms, p50, p99, per_call, start_lmserver, write

SPEC = "question -> answer"
ROUNDS = 40  # A/B rounds
K = 15  # calls per contender per round
CPU_BLOCKS, CPU_N = 10, 20  # interleaved CPU blocks, calls per block and side
HOST_N = 300  # per-call alternations of the in-process host measurement


def main() -> None:
    proc, url = start_lmserver()
    try:
        import dspy

        import dspex
        from dspex.bridge.host import dspy_lm
        from dspex.bridge.session import DSPySession, _pool_defaults, http_lm_spec
        from dspex.pool import shutdown_pools
        from dspex.pool.registry import get_pool

        lm = dspex.LM("openai/test", api_base=url, api_key="k", cache=False)
        spec = http_lm_spec(lm)
        probe_pool = {**_pool_defaults(), "target": "_bridge_probe:make", "size": 1}
        probe_pool["pythonpath"] = (str(Path(__file__).parent), *probe_pool["pythonpath"])
        dspex.configure(lm=lm, pools={"bridge_probe": probe_pool})

        started = time.perf_counter()
        remote = dspex.Predict(SPEC, implementation="dspy")
        remote(question="warm up")
        cold = time.perf_counter() - started
        probe = get_pool("bridge_probe")
        probe.call_sync("run", spec, 1, 5, True)
        timed = dspex.Predict(SPEC, implementation="dspy", session=DSPySession(pool=probe))
        timed(question="warm up")

        dspy.configure(lm=dspy_lm(dspy, spec))  # the very LM the worker builds
        in_process = dspy.Predict(SPEC)
        native = dspex.Predict(SPEC)

        # A/B rounds: each round times K calls of every contender back to back (the order
        # alternates by round), so load that drifts on a shared machine hits all alike. The
        # overhead is the median over rounds of the per-round p50 difference; its spread the
        # interquartile range of those differences and a bootstrap 95% interval of the median.
        loop = asyncio.new_event_loop()
        sides: dict[str, Any] = {
            "dspy": lambda: in_process(question="q"),
            "pool": lambda: remote(question="q"),
            "pool_async": lambda: loop.run_until_complete(remote.acall(question="q")),
            "native": lambda: native(question="q"),
            # the worker times its own K calls (usage tracked, as a bridged call does)
            "in_worker": lambda: probe.call_sync("run", spec, K, 2, True)[:-1],
            "timed": lambda: _timed_round(lambda: timed(question="q"), probe, outside),
            "timed_async": lambda: _timed_round(
                lambda: loop.run_until_complete(timed.acall(question="q")), probe, outside_async
            ),
        }
        outside: list[float] = []  # per bridged call: latency - the worker's DSPyHost.call
        outside_async: list[float] = []  # the same for `acall`
        samples: dict[str, list[float]] = {name: [] for name in sides}
        pairs = {
            "pool": ("pool", "dspy"),
            "pool_async": ("pool_async", "dspy"),
            "in_worker": ("in_worker", "dspy"),
            "bridge": ("pool", "in_worker"),
        }
        diffs: dict[str, list[float]] = {name: [] for name in pairs}
        for r in range(ROUNDS):
            order = list(sides) if r % 2 == 0 else list(reversed(sides))
            p50s = {}
            for name in order:
                special = name in ("in_worker", "timed", "timed_async")
                xs = sides[name]() if special else per_call(sides[name], K, warmup=2)
                samples[name] += xs
                p50s[name] = p50(xs)
            for name, (a, b) in pairs.items():
                diffs[name].append(p50s[a] - p50s[b])
        rows = {name: (p50(xs), p99(xs)) for name, xs in samples.items()}
        cpu = _cpu_blocks(sides, probe, spec, remote._dspy_session.worker_pid)
        loop.close()
        host = _host_cpu(dspy, spec, SPEC)

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

    s = {name: _summary(xs) for name, xs in diffs.items()}
    over = cpu["parent"] + cpu["worker"] - cpu["dspy"]
    text = f"""
## DSPy backend (`implementation="dspy"`)

`.venv/bin/python benchmarks/bench_bridge.py` — LMServer in its own process, cache off, the
same DSPy LM on both sides (built from the worker's spec); {ROUNDS} A/B rounds of {K}
sequential calls per contender (order alternating by round); p50 (p99) over all rounds.
1-minute load average at the end: {load()}.

| call | latency |
|---|---:|
| `dspy.Predict` in this process (DSPy 3.4.1) | {ms(rows["dspy"][0])} ({ms(rows["dspy"][1])}) |
| `dspex.Predict(implementation="dspy")`, sync | {ms(rows["pool"][0])} ({ms(rows["pool"][1])}) |
| `dspex.Predict(implementation="dspy")`, `acall` | {ms(rows["pool_async"][0])} ({ms(rows["pool_async"][1])}) |
| the same `dspy.Predict` call inside a DSPy pool worker, back to back (no bridge) | {ms(rows["in_worker"][0])} ({ms(rows["in_worker"][1])}) |
| `dspex.Predict` native (reference) | {ms(rows["native"][0])} ({ms(rows["native"][1])}) |
| first call of a new remote module, warm pool | {ms(p50(firsts))} ({ms(p99(firsts))}) |
| cold start: pool start + DSPy import + first prediction | {ms(cold)} |

Differences — median over {ROUNDS} rounds of the per-round p50 difference [interquartile
range of the differences; bootstrap 95% interval of the median]:

| | difference |
|---|---:|
| **bridged sync − in process** (target ≤ +0.25 ms) | {s["pool"]} |
| bridged `acall` − in process | {s["pool_async"]} |
| in a worker (no bridge) − in process: the cost of being a worker process | {s["in_worker"]} |
| bridged sync − in a worker: the bridge itself | {s["bridge"]} |

The bridge per call, without the DSPy call's variance: a bridged module on a pool whose host
times its own `DSPyHost.call` (`_bridge_probe`); latency minus that time, over
{len(outside)} calls in the same rounds: p50 **{ms(p50(outside))}** [IQR {_quartiles(outside)}]
(parent, frames, wake-ups, the worker loop; the host's own work is below); the same for
`acall` (each call one `run_until_complete`, as the `acall` row above): p50
**{ms(p50(outside_async))}** [IQR {_quartiles(outside_async)}].

CPU per call (run time of all threads of the process, `schedstat`), {CPU_BLOCKS} interleaved
blocks of {CPU_N} calls per side:

| | CPU per call |
|---|---:|
| `dspy.Predict` in this process | {ms(cpu["dspy"])} |
| bridged: this process (all threads: module call, encode, frame, wait, decode) | {ms(cpu["parent"])} |
| bridged: the worker (the DSPy call, the host, the worker loop) | {ms(cpu["worker"])} |
| the same DSPy call inside a worker, back to back | {ms(cpu["in_worker"])} |
| **bridge CPU over the in-process call** (parent + worker − in process) | {over * 1e3:+.3f} ms |

The host's own work, in this process (thread CPU, median of {HOST_N} per-call alternations
of the same `dspy.Predict` call with the worker's LM): plain {ms(host["plain"])}; with
`track_usage=True` (bridged predictions carry their usage) {ms(host["usage"])}; through
`DSPyHost.call` (allow-list checks, decode, `dspy.context`, encode) {ms(host["host"])} —
host work **{(host["host"] - host["usage"]) * 1e3:+.3f} ms**, usage tracking
{(host["usage"] - host["plain"]) * 1e3:+.3f} ms.
"""
    write("bridge", text)


def _cpu_blocks(
    sides: dict[str, Any], probe: Any, spec: dict[str, Any], pid: int | None
) -> dict[str, float]:
    """CPU per call of each side, measured in interleaved blocks (drifting load hits all).

    Every side is read the same way: the nanosecond run time of all the process's threads
    (``/proc/<pid>/task/*/schedstat``) — this process for the in-process call, the worker for
    a bridged call, the probe worker around its back-to-back block (one pool call for
    ``CPU_N`` DSPy calls). (Until stop 20 the worker was read in 10 ms clock ticks and the
    probe as its one thread's CPU: two clocks, one of them coarse.)"""
    probe_pid = probe.call_sync("pid")
    total = {"dspy": 0.0, "parent": 0.0, "worker": 0.0, "in_worker": 0.0}
    for b in range(CPU_BLOCKS):
        for name in ("dspy", "pool", "in_worker") if b % 2 == 0 else ("in_worker", "pool", "dspy"):
            if name == "in_worker":
                before = _run_time(probe_pid)
                probe.call_sync("run", spec, CPU_N, 0, True)
                total["in_worker"] += _run_time(probe_pid) - before
                continue
            per_call(sides[name], 2, warmup=0)
            before, worker_before = _run_time(os.getpid()), _run_time(pid)
            per_call(sides[name], CPU_N, warmup=0)
            if name == "dspy":
                total["dspy"] += _run_time(os.getpid()) - before
            else:
                total["parent"] += _run_time(os.getpid()) - before
                total["worker"] += _run_time(pid) - worker_before
    return {k: v / (CPU_BLOCKS * CPU_N) for k, v in total.items()}


def _timed_round(call: Any, probe: Any, outside: list[float]) -> list[float]:
    """``K`` calls (``call()``: one call of a bridged module served by the probe's timing
    host, sync or ``acall``): their latencies; ``outside`` gets each call's latency minus
    the time the worker spent in ``DSPyHost.call`` for it (the same call measured at both
    ends, so the DSPy call's own variance cancels out)."""
    per_call(call, 2, warmup=0)
    probe.call_sync("take_call_times")
    xs = per_call(call, K, warmup=0)
    inside = probe.call_sync("take_call_times")
    assert len(inside) == len(xs), (len(inside), len(xs))
    outside.extend(x - y for x, y in zip(xs, inside, strict=True))
    return xs


def _host_cpu(dspy: Any, spec: dict[str, Any], signature: str) -> dict[str, float]:
    """Thread CPU per call: the DSPy call alone, with usage tracking, through DSPyHost.call."""
    from dspex.bridge.host import DSPyHost

    host = DSPyHost()
    host.create("o1", "dspy.Predict", [signature], {})
    full = {**spec, "ref": "lm1"}
    host.call("o1", "__call__", [], {"question": "q"}, {"lm": full, "adapter": None})
    ctx = {"lm": {"ref": "lm1"}, "adapter": None}
    lm = host._lm({"ref": "lm1"})
    pred = dspy.Predict(signature)

    def plain(usage: bool) -> None:
        with dspy.context(lm=lm, track_usage=usage):
            pred(question="q")

    sides = {
        "plain": lambda: plain(False),
        "usage": lambda: plain(True),
        "host": lambda: host.call("o1", "__call__", [], {"question": "q"}, ctx),
    }
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(HOST_N):
        for name, fn in sides.items():
            start = time.thread_time()
            fn()
            times[name].append(time.thread_time() - start)
    return {name: statistics.median(xs) for name, xs in times.items()}


def _run_time(pid: int | None) -> float:
    """Seconds on CPU so far of every thread of process ``pid`` (Linux ``schedstat``, ns)."""
    if pid is None:
        return 0.0
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except FileNotFoundError:  # a thread that just ended
            pass
    return total / 1e9


def _quartiles(xs: list[float]) -> str:
    q1, _, q3 = statistics.quantiles(xs, n=4)
    return f"{q1 * 1e3:.3f} … {q3 * 1e3:.3f} ms"


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
