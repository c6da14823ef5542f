"""dspex.sandbox.PythonSandbox vs DSPy 3.4.1's LocalInterpreter (unisolated CPython worker).

What isolation costs: a cold session (start + first execute) and a warm round trip
(one ``execute`` of a small expression on a live session, state kept).
"""

from __future__ import annotations

import time

from _common import ms, p50, p99, per_call, write

N_COLD = 10
N_WARM = 300


def cold(factory: object) -> list[float]:
    out = []
    for _ in range(N_COLD):
        start = time.perf_counter()
        interp = factory()  # type: ignore[operator]
        interp.execute("x = 1\nx")
        out.append(time.perf_counter() - start)
        interp.shutdown()
    return out


def warm(factory: object) -> list[float]:
    interp = factory()  # type: ignore[operator]
    interp.execute("x = 0")
    try:
        return per_call(lambda: interp.execute("x = x + 1\nx"), N_WARM, warmup=20)
    finally:
        interp.shutdown()


def main() -> None:
    from dspy.primitives.local_interpreter import LocalInterpreter

    from dspex.sandbox import PythonSandbox

    rows = []
    results = {}
    for name, factory in (
        ("dspex PythonSandbox (bwrap)", lambda: PythonSandbox(timeout=30, memory_mb=256)),
        ("DSPy LocalInterpreter (no isolation)", LocalInterpreter),
    ):
        results[name] = (cold(factory), warm(factory))
    base_cold, base_warm = results["DSPy LocalInterpreter (no isolation)"]
    for name, (c, w) in results.items():
        rows.append(
            f"| {name} | {ms(p50(c))} | {p50(c) / p50(base_cold):.2f}x | {ms(p50(w))} | "
            f"{ms(p99(w))} | {p50(w) / p50(base_warm):.2f}x |"
        )
    write(
        "sandbox",
        "## Code sandbox (`dspex.sandbox`)\n\n"
        f"Cold = new session + first `execute` (p50 of {N_COLD}); warm = one `execute` on a live "
        f"session (p50/p99 of {N_WARM}). Ratio vs DSPy's LocalInterpreter, which runs the code in "
        "an unisolated CPython worker (DSPy's isolated PythonInterpreter needs Deno + network "
        "and cannot run here). Shared 2-core machine with other jobs running: noisy.\n\n"
        "| interpreter | cold p50 | cold ratio | warm p50 | warm p99 | warm ratio |\n"
        "|---|---|---|---|---|---|\n" + "\n".join(rows),
    )


if __name__ == "__main__":
    main()
