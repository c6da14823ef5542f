"""Worker pools: dspex.pool vs concurrent.futures.ProcessPoolExecutor vs Ray actors, same run.

Run: ``.venv/bin/python benchmarks/bench_pool.py`` (writes benchmarks/results/pool.md).

Measured: round trip of a trivial call (p50/p99), throughput with 2 workers and many calls in
flight, worker cold start, and restart-to-ready after a kill — with a light target and with
``dspy`` preloaded (the fork-server template imports it once; a fresh interpreter pays the
import on every start).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import signal
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from _common import p50, p99, per_call, us, write


class Handler:
    def ping(self) -> str:
        return "pong"

    def count(self, n: int) -> Any:
        yield from range(n)


def make() -> Handler:
    return Handler()


def ping() -> str:
    return "pong"


def _ms(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 1e3:,.1f} ms"


def sample(fn: Callable[[], object], n: int, warmup: int = 200) -> list[float]:
    """Seconds per blocking call of ``fn`` (after ``warmup`` untimed calls)."""
    return per_call(fn, n, warmup)


async def interleaved(
    variants: dict[str, Callable[[], Awaitable[object]]], n: int, warmup: int = 200
) -> dict[str, list[float]]:
    """Seconds per awaited call of each variant, taking turns call by call (so that load
    drifting during the run hits every variant alike); the first ``warmup`` turns are untimed."""
    seen: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(warmup + n):
        for name, fn in variants.items():
            start = time.perf_counter()
            await fn()
            if i >= warmup:
                seen[name].append(time.perf_counter() - start)
    return seen


async def asample(fn: Callable[[], Awaitable[object]], n: int, warmup: int = 200) -> list[float]:
    """Seconds per awaited call of ``fn``."""
    return (await interleaved({"": fn}, n, warmup))[""]


async def throughput(fn: Callable[[], Awaitable[object]], n: int, in_flight: int = 64) -> float:
    """Calls per second completing ``n`` awaited calls with at most ``in_flight`` at once."""
    sem = asyncio.Semaphore(in_flight)

    async def one() -> None:
        async with sem:
            await fn()

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return n / (time.perf_counter() - start)


# ---------------------------------------------------------------------------- dspex


def dspex_numbers(rows: dict[str, dict[str, Any]]) -> None:
    from dspex.pool import Pool

    pool = Pool(target="bench_pool:make", size=2, name="bench")
    pool.start_sync()

    async def roundtrip() -> tuple[list[float], float]:
        lat = await asample(lambda: pool.call("ping"), 5000)
        return lat, await throughput(lambda: pool.call("ping"), 20000)

    lat, rate = asyncio.run(roundtrip())
    pipelined = pool.stats()["pipelined"]
    sync_lat = sample(lambda: pool.call_sync("ping"), 5000)
    rows["dspex.pool (async call)"] = {
        "p50": p50(lat),
        "p99": p99(lat),
        "rate": rate,
        "pipelined": pipelined,
    }
    rows["dspex.pool (call_sync)"] = {"p50": p50(sync_lat), "p99": p99(sync_lat)}
    pool.close_sync()


def dspex_start(preload: tuple[str, ...], fork_server: bool) -> dict[str, float]:
    """Cold start (pool start → all ready) and restart-to-ready after SIGKILL, in seconds."""
    from dspex.pool import Pool

    pool = Pool(
        target="bench_pool:make", size=1, preload=preload, fork_server=fork_server, name="s"
    )
    start = time.perf_counter()
    pool.start_sync()
    cold = time.perf_counter() - start
    restarts = []
    for _ in range(5 if preload else 20):
        pid = pool.stats()["pids"][0]
        start = time.perf_counter()
        os.kill(pid, signal.SIGKILL)
        while True:
            s = pool.stats()
            if s["idle"] == 1 and pid not in s["pids"]:
                break
            time.sleep(0.0005)
        restarts.append(time.perf_counter() - start)
    pool.close_sync()
    return {"cold": cold, "restart": statistics.median(restarts)}


def raw_floor() -> float:
    """p50 of a bare msgpack request/response over a socketpair to a forked process."""
    import socket

    import msgpack

    a, b = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        a.close()
        while data := b.recv(65536):
            m = msgpack.unpackb(data[4:])
            out = msgpack.packb(["result", m[1], "pong"])
            b.sendall(len(out).to_bytes(4, "big") + out)
        os._exit(0)
    b.close()
    counter = iter(range(10**9))

    def one() -> None:
        frame = msgpack.packb(["call", next(counter), "ping", [], {}, None, None, 0])
        a.sendall(len(frame).to_bytes(4, "big") + frame)
        a.recv(65536)

    lat = sample(one, 5000)
    a.close()
    os.waitpid(pid, 0)
    return p50(lat)


# ---------------------------------------------------------------------------- ProcessPoolExecutor


def ppe_numbers(rows: dict[str, dict[str, Any]]) -> dict[str, float]:
    start = time.perf_counter()
    ex = concurrent.futures.ProcessPoolExecutor(max_workers=2)
    ex.submit(ping).result()
    cold = time.perf_counter() - start
    lat = sample(lambda: ex.submit(ping).result(), 5000)
    n = 20000
    start = time.perf_counter()
    futures = [ex.submit(ping) for _ in range(n)]
    for f in futures:
        f.result()
    rate = n / (time.perf_counter() - start)
    rows["ProcessPoolExecutor"] = {"p50": p50(lat), "p99": p99(lat), "rate": rate}
    # restart: a killed worker breaks the whole executor; the recovery is a new executor
    pid = next(iter(ex._processes))
    os.kill(pid, signal.SIGKILL)
    try:
        ex.submit(ping).result()
    except concurrent.futures.process.BrokenProcessPool:
        pass
    ex.shutdown(wait=True)
    start = time.perf_counter()
    ex = concurrent.futures.ProcessPoolExecutor(max_workers=1)
    ex.submit(ping).result()
    restart = time.perf_counter() - start
    ex.shutdown()
    return {"cold": cold, "restart": restart}


# ---------------------------------------------------------------------------- Ray


def ray_numbers(rows: dict[str, dict[str, Any]]) -> dict[str, float] | str:
    try:
        import ray
    except ImportError:
        return "Ray is not installed (`pip install ray`)"
    try:
        start = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        init = time.perf_counter() - start

        @ray.remote(max_restarts=-1)
        class Actor:
            def ping(self) -> str:
                return "pong"

            def pid(self) -> int:
                return os.getpid()

        start = time.perf_counter()
        actors = [Actor.remote() for _ in range(2)]  # type: ignore[attr-defined]
        ray.get([a.ping.remote() for a in actors])
        cold = time.perf_counter() - start
        a = actors[0]
        lat = sample(lambda: ray.get(a.ping.remote()), 2000, warmup=100)
        n = 20000
        start = time.perf_counter()
        refs = [actors[i % 2].ping.remote() for i in range(n)]
        ray.get(refs)
        rate = n / (time.perf_counter() - start)
        rows["Ray actors"] = {"p50": p50(lat), "p99": p99(lat), "rate": rate}
        ray_pool_numbers(rows)
        ray_call_path_numbers(rows, a)
        restarts = []
        for _ in range(3):
            pid = ray.get(a.pid.remote())
            start = time.perf_counter()
            os.kill(pid, signal.SIGKILL)
            while True:
                try:
                    if ray.get(a.pid.remote(), timeout=10) != pid:
                        break
                except Exception:
                    time.sleep(0.005)
            restarts.append(time.perf_counter() - start)
        return {"cold": cold, "restart": statistics.median(restarts), "init": init}
    except Exception as exc:
        return f"Ray failed here: {type(exc).__name__}: {exc}"
    finally:
        if ray.is_initialized():
            ray.shutdown()


def ray_pool_numbers(rows: dict[str, dict[str, Any]]) -> None:
    """dspex's Ray pool backend (``backend="ray"``, 2 actors) on the cluster already up."""
    from dspex.pool.config import PoolConfig
    from dspex.pool.ray_backend import RayPool

    here = os.path.dirname(os.path.abspath(__file__))
    spec = {"target": "bench_pool:make", "size": 2, "backend": "ray", "pythonpath": [here]}
    pool = RayPool(PoolConfig.from_mapping(spec), name="bench-ray")

    async def measure() -> tuple[list[float], float]:
        await pool.start()
        lat = await asample(lambda: pool.call("ping"), 1000, warmup=100)
        return lat, await throughput(lambda: pool.call("ping"), 5000)

    try:
        lat, rate = asyncio.run(measure())
        sync_lat = sample(lambda: pool.call_sync("ping"), 1000, warmup=100)
    finally:
        pool.close_sync()
    rows["dspex RayPool, backend='ray' (async call)"] = {
        "p50": p50(lat),
        "p99": p99(lat),
        "rate": rate,
    }
    rows["dspex RayPool, backend='ray' (call_sync)"] = {"p50": p50(sync_lat), "p99": p99(sync_lat)}


def ray_call_path_numbers(rows: dict[str, dict[str, Any]], actor: Any) -> None:
    """The Ray pool's call path beside its floor, interleaved call by call (helper ray's rows):
    a raw actor call awaited as an ObjectRef from asyncio (what an async pool call costs at
    least), the pool's async call, the same with a parent callback registered (its events are
    watched, but a quick call returns before any poll), and a 10-item stream."""
    from dspex.pool.config import PoolConfig
    from dspex.pool.ray_backend import RayPool

    here = os.path.dirname(os.path.abspath(__file__))
    spec = {"target": "bench_pool:make", "size": 1, "backend": "ray", "pythonpath": [here]}
    pool = RayPool(PoolConfig.from_mapping(spec), name="bench-ray-path")
    watched = RayPool(PoolConfig.from_mapping(spec), name="bench-ray-watched")
    watched.register_callback("unused", lambda: None)

    async def stream() -> None:
        async for _ in pool.stream("count", 10):
            pass

    variants: dict[str, Callable[[], Awaitable[object]]] = {
        "raw Ray actor, `await actor.ping.remote()` (async floor)": lambda: actor.ping.remote(),
        "dspex Ray pool, async call (interleaved with the floor)": lambda: pool.call("ping"),
        "dspex Ray pool, async call, parent callback registered": lambda: watched.call("ping"),
        "dspex Ray pool, 10-item stream": stream,
    }

    async def measure() -> dict[str, list[float]]:
        await pool.start()
        await watched.start()
        return await interleaved(variants, 1000, warmup=100)

    try:
        seen = asyncio.run(measure())
    finally:
        pool.close_sync()
        watched.close_sync()
    for name, lat in seen.items():
        rows[name] = {"p50": p50(lat), "p99": p99(lat)}


# ---------------------------------------------------------------------------- report


def main() -> None:
    rows: dict[str, dict[str, Any]] = {}
    floor = raw_floor()
    dspex_numbers(rows)
    light_tpl = dspex_start((), True)
    light_direct = dspex_start((), False)
    dspy_tpl = dspex_start(("dspy",), True)
    dspy_direct = dspex_start(("dspy",), False)
    ppe = ppe_numbers(rows)
    ray_result = ray_numbers(rows)

    lines = [
        "## Worker pools (`dspex.pool`)",
        "",
        f"Python {sys.version.split()[0]}, {os.cpu_count()} cores. Trivial call `ping()`; "
        "throughput = 20,000 calls with 2 workers (dspex: 64 in flight; PPE/Ray: all submitted "
        "at once).",
        "",
        "| | round trip p50 | round trip p99 | throughput (2 workers) |",
        "|---|---:|---:|---:|",
    ]
    for name, r in rows.items():
        rate = f"{r['rate']:,.0f} calls/s" if "rate" in r else "—"
        lines.append(f"| {name} | {us(r['p50'])} | {us(r['p99'])} | {rate} |")
    sync = rows["dspex.pool (call_sync)"]
    base = rows["dspex.pool (async call)"]
    ppe_row = rows["ProcessPoolExecutor"]
    lines += [
        "",
        "Both round trips are blocking callers waiting for one trivial call "
        "(`pool.call_sync` / `executor.submit(f).result()`).",
        "",
        "| target | measured | met |",
        "|---|---:|:---:|",
        f"| call_sync round trip p50 ≤ 100 µs | {us(sync['p50'])} | "
        f"{'yes' if sync['p50'] <= 100e-6 else 'no'} |",
        f"| call_sync p50 ≤ 0.6× PPE's | {sync['p50'] / ppe_row['p50']:.2f}× | "
        f"{'yes' if sync['p50'] <= 0.6 * ppe_row['p50'] else 'no'} |",
        f"| throughput (2 workers) ≥ 1.3× PPE's | {base['rate'] / ppe_row['rate']:.2f}× | "
        f"{'yes' if base['rate'] >= 1.3 * ppe_row['rate'] else 'no'} |",
    ]
    if "Ray actors" in rows:
        ray_row = rows["Ray actors"]
        lines += [
            "",
            f"dspex.pool vs Ray actors: call_sync p50 {ray_row['p50'] / sync['p50']:.2f}× faster, "
            f"throughput {base['rate'] / ray_row['rate']:.2f}×.",
        ]
    lines += [
        "",
        f"Floor: a bare msgpack round trip over a socketpair to a forked process takes "
        f"{us(floor)} (p50). `call_sync` writes its frame to an idle worker's socket and reads "
        "the reply on the calling thread (no thread hop; `dspex.pool.direct`); async calls "
        "hop to the pool's I/O thread and back, batched (one wake-up per batch each way), and "
        "each worker holds up to `pipeline` (default 2) short calls queued behind the running "
        f"one ({rows['dspex.pool (async call)']['pipelined']:,} of the async calls "
        "were pipelined).",
        "",
        "Start and restart (restart = SIGKILL of the worker → replacement ready; median):",
        "",
        "| | cold start | restart-to-ready |",
        "|---|---:|---:|",
        f"| dspex.pool, light target, fork-server template | {_ms(light_tpl['cold'])} | {_ms(light_tpl['restart'])} |",
        f"| dspex.pool, light target, fresh interpreter | {_ms(light_direct['cold'])} | {_ms(light_direct['restart'])} |",
        f"| dspex.pool, `preload=['dspy']`, template | {_ms(dspy_tpl['cold'])} | {_ms(dspy_tpl['restart'])} |",
        f"| dspex.pool, `preload=['dspy']`, fresh interpreter | {_ms(dspy_direct['cold'])} | {_ms(dspy_direct['restart'])} |",
        f"| ProcessPoolExecutor (restart = a new executor: one kill breaks it) | {_ms(ppe['cold'])} | {_ms(ppe['restart'])} |",
    ]
    if isinstance(ray_result, dict):
        lines.append(
            f"| Ray actors (after `ray.init` {_ms(ray_result['init'])}; `max_restarts=-1`) | "
            f"{_ms(ray_result['cold'])} | {_ms(ray_result['restart'])} |"
        )
        lines += [
            "",
            "The `dspex RayPool` rows are the Ray pool backend (`pools={...: {'backend': "
            "'ray'}}`, 2 actors, 5,000 calls at 64 in flight for throughput): a call is a "
            "`start` actor-method call that returns the result when the call is quick, so its "
            "floor is one Ray actor round trip (the `Ray actors` row) plus the pool's "
            "bookkeeping.",
        ]
    else:
        lines += ["", f"Ray: not measured — {ray_result}."]
    lines += [
        "",
        f"With DSPy preloaded, the template makes a restart {dspy_direct['restart'] / dspy_tpl['restart']:.0f}× "
        "faster than starting a fresh interpreter.",
        "",
        "Figures are from one run on a shared 2-core machine; the ratios compare runs made "
        "minutes apart in the same process.",
    ]
    write("pool", "\n".join(lines))


if __name__ == "__main__":
    main()
