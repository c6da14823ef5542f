"""The floor under any cross-process call that lasts milliseconds, on this machine.

Run: ``.venv/bin/python benchmarks/bench_pool_floor.py`` (writes benchmarks/results/pool_floor.md).

``bench_bridge.py``'s target compares a bridged DSPy call (~5-6 ms) with the same call in
process. Part of that difference belongs to no bridge at all: a process that waits ~5 ms for
another one lets its vCPU go idle, and both hand-overs then wake an idle vCPU. This script
measures that part with no DSPy, no LM and no bridge code: one worker process runs a plain
function lasting 5 ms of wall time (``busy``: computing; ``mixed``: computing, one 1 ms
blocking sleep as an HTTP wait would be, computing), called three ways in interleaved rounds:
in this process, through a one-worker ``dspex.pool.Pool`` (``call_sync``), and through a
one-worker ``concurrent.futures.ProcessPoolExecutor``. A function timed by the wall clock
lasts the same however cold the CPU is, so latency minus the in-process latency is the
hand-over cost alone.
"""

from __future__ import annotations

import concurrent.futures
import statistics
import time

from _common import write

WORK = 0.005
ROUNDS = 400


def busy(seconds: float) -> float:
    """Compute until ``seconds`` of wall time have passed."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
    return seconds


def mixed(seconds: float) -> float:
    """Compute, block once (as a DSPy call blocks on its HTTP request), compute."""
    busy(seconds * 0.4)
    time.sleep(seconds * 0.2)
    busy(seconds * 0.4)
    return seconds


class Handler:
    def busy(self, seconds: float) -> float:
        return busy(seconds)

    def mixed(self, seconds: float) -> float:
        return mixed(seconds)


def make() -> Handler:
    return Handler()


def ci95(xs: list[float]) -> str:
    """A bootstrap-free 95% CI of the median (order statistics)."""
    s = sorted(xs)
    n = len(s)
    half = 1.96 * (n**0.5) / 2
    lo, hi = s[max(0, int(n / 2 - half))], s[min(n - 1, int(n / 2 + half))]
    return f"{lo * 1e3:+.3f} … {hi * 1e3:+.3f}"


def main() -> None:
    from dspex.pool import Pool

    pool = Pool(target="bench_pool_floor:make", size=1, name="floor")
    pool.start_sync()
    ppe = concurrent.futures.ProcessPoolExecutor(1)
    rows = []
    try:
        for kind, fn in (("busy", busy), ("mixed", mixed)):
            sides = {
                "in process": lambda fn=fn: fn(WORK),
                "dspex pool `call_sync`": lambda kind=kind: pool.call_sync(kind, WORK),
                "ProcessPoolExecutor": lambda fn=fn: ppe.submit(fn, WORK).result(),
            }
            for side in sides.values():  # warm up: imports, connections, first calls
                for _ in range(20):
                    side()
            seen: dict[str, list[float]] = {name: [] for name in sides}
            for i in range(ROUNDS):
                order = list(sides.items())
                if i % 2:
                    order.reverse()
                for name, side in order:
                    start = time.perf_counter()
                    side()
                    seen[name].append(time.perf_counter() - start)
            base = seen["in process"]
            for name, xs in seen.items():
                if name == "in process":
                    continue
                diffs = [x - b for x, b in zip(xs, base, strict=True)]
                rows.append(
                    f"| {kind} | {name} | {statistics.median(xs) * 1e3:.3f} ms | "
                    f"**{statistics.median(diffs) * 1e3:+.3f} ms** | {ci95(diffs)} |"
                )
            rows.append(f"| {kind} | in process | {statistics.median(base) * 1e3:.3f} ms | — | |")
    finally:
        ppe.shutdown()
        pool.close_sync()
    write(
        "pool_floor",
        f"""
## The hand-over floor of a 5 ms cross-process call (`bench_pool_floor.py`)

One worker runs a function lasting {WORK * 1e3:.0f} ms of wall time; {ROUNDS} interleaved rounds
(order flipped each round); "over in process" is the median of per-round differences with
a 95% CI of that median. No DSPy, no LM, no bridge: what any process pool pays here.

| function | called | latency p50 | over in process | 95% CI |
|---|---|---:|---:|---|
{chr(10).join(rows)}

Measured {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}.
""",
    )


if __name__ == "__main__":
    main()
