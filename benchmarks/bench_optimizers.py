"""Native optimizers vs DSPy 3.4.1 in process: compile wall time and LM calls (issue 15).

One run, one LMServer in its own process with 20 ms latency per request, answering by the
rule in ``tests/teleprompt/_oracle.py`` (some examples pass the metric, some fail, some pass
only on a later round). Cache off on both sides; the same program (a user Module with a
``Predict`` and a ``ChainOfThought``), trainset, metric and ``num_threads`` on both sides.
Each side's compiled state is checked equal before its time is reported.

Rows: BootstrapFewShot (20 train examples), BootstrapFewShotWithRandomSearch (8 candidate
programs, 20 train / 20 val), COPRO (breadth 4, depth 2), GEPA light (20 train / 20 val; the
reflection LM's instructions fix the multiples of 7 the oracle gets wrong, so candidates are
accepted and re-scored on the valset); ``--mipro``: MIPROv2 light (its own section). LM calls are counted by the server: DSPy 3.4.1's client sends a
call with ``n=k`` as ``k`` requests, DSPex's as one request (COPRO's proposals).

    python benchmarks/bench_optimizers.py
    python benchmarks/bench_optimizers.py --only gepa     # the GEPA row alone
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from _common import write

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LATENCY = 0.02
NUM_THREADS = 8
TRAIN = [2, 9, 4, 7, 5, 15, 6, 8, 10, 11, 12, 21, 13, 14, 16, 17, 18, 19, 20, 22]
VAL = [23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42]
COUNT = "__bench_count_requests__"


def serve(port: int) -> None:
    """The server process: the oracle rule, 20 ms per request, and a request counter."""
    import threading

    from tests.teleprompt._oracle import oracle

    from dspex.testing import LMServer

    server = LMServer(port=port, latency=LATENCY).start()
    server.add_rule(
        COUNT, lambda _req: str(sum(COUNT not in r.body.decode() for r in server.requests))
    )
    server.add_rule(_gepa_request, _gepa_reply)
    server.add_rule(None, oracle)
    print("ready", flush=True)
    threading.Event().wait()


GEPA_MARK = "GEPA-TUNED"


def _gepa_request(request: Any) -> bool:
    system = str(request.messages[0]["content"])
    return GEPA_MARK in system or "`new_instruction`" in system


def _gepa_reply(request: Any) -> str:
    """GEPA's reflection LM proposes a marked instruction; a marked ``answer`` predictor also
    gets the multiples of 7 right (the oracle answers them wrong)."""
    from tests.teleprompt._oracle import _number, oracle

    from dspex.testing.answers import read_prompt, render_reply

    system = str(request.messages[0]["content"])
    spec = read_prompt(system, request.last_user_message)
    if spec is not None and "new_instruction" in spec.fields:
        n = _number(request.last_user_message)
        return render_reply(spec, {"new_instruction": f"{GEPA_MARK} {n}: say even or odd."})
    if spec is not None and "answer" in spec.fields and _number(request.last_user_message) % 7 == 0:
        n = _number(request.last_user_message)
        values = {
            f: ("even" if n % 2 == 0 else "odd") if f == "answer" else f"{f} {n}"
            for f in spec.fields
        }
        return render_reply(spec, values)
    return oracle(request)


def gepa_metric(
    gold: Any, pred: Any, trace: Any = None, pred_name: Any = None, pred_trace: Any = None
) -> float:
    return float(gold.answer == pred.answer)


def gepa_light(url: str) -> tuple[str, float, float, int, int, bool]:
    """The GEPA light row: ``auto="light"`` on the 2-predictor program, same seed both sides."""
    import dspy
    from tests.teleprompt._oracle import trainset

    import dspex
    from dspex.teleprompt import GEPA

    def make(lib: Any, cls: Any) -> Any:
        reflection = lib.LM("openai/reflect", api_base=url, api_key="k", cache=False, num_retries=0)
        return lambda: cls(
            metric=gepa_metric, auto="light", reflection_lm=reflection, num_threads=NUM_THREADS
        )

    def data(lib: Any) -> dict[str, Any]:
        return {"trainset": trainset(lib, TRAIN), "valset": trainset(lib, VAL)}

    d_wall, d_calls, d_state = run(dspy, url, make(dspy, dspy.GEPA), **data(dspy))
    n_wall, n_calls, n_state = run(dspex, url, make(dspex, GEPA), **data(dspex))
    name = "GEPA light (2 predictors, 20 train / 20 val)"
    return name, d_wall, n_wall, d_calls, n_calls, d_state == n_state


def start() -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    proc.stdout.readline()
    return proc, f"http://127.0.0.1:{port}/v1"


def requests_so_far(url: str) -> int:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": COUNT}]}).encode()
    req = urllib.request.Request(
        f"{url}/chat/completions", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req) as resp:
        return int(json.loads(resp.read())["choices"][0]["message"]["content"])


def run(lib: Any, url: str, make: Any, **kwargs: Any) -> tuple[float, int, str]:
    from tests.teleprompt._oracle import two_step

    lm = lib.LM("openai/test", api_base=url, api_key="k", cache=False, num_retries=0)
    with lib.context(lm=lm):  # warm up: imports, connection pools
        lib.Predict("question -> answer")(question="Is 1 even or odd?")
    before = requests_so_far(url)
    with lib.context(lm=lm):
        start = time.perf_counter()
        program = make().compile(two_step(lib), **kwargs)
        wall = time.perf_counter() - start
    calls = requests_so_far(url) - before
    return wall, calls, json.dumps(program.dump_state(), default=repr)


def table(rows: list[tuple[str, float, float, int, int, bool]]) -> list[str]:
    lines = [
        "| compile | DSPy 3.4.1 | DSPex native | speed-up | LM calls DSPy / DSPex | same state |",
        "|---|---:|---:|---:|---:|:---:|",
    ]
    for name, d_wall, n_wall, d_calls, n_calls, same in rows:
        lines.append(
            f"| {name} | {d_wall:.2f} s | {n_wall:.2f} s | {d_wall / n_wall:.1f}x | "
            f"{d_calls} / {n_calls} | {'yes' if same else 'NO'} |"
        )
    return lines


def main_gepa() -> None:
    import logging

    logging.disable(logging.WARNING)
    proc, url = start()
    try:
        rows = [gepa_light(url)]
    finally:
        proc.terminate()
        proc.wait(5)
    lines = [
        "### GEPA light (`benchmarks/bench_optimizers.py --only gepa`)",
        "",
        f"One LMServer process, {LATENCY * 1000:.0f} ms per request, cache off, "
        f"`num_threads={NUM_THREADS}`, seed 0, same program and data both sides. One run on a "
        "shared 2-core machine: noisy.",
        "",
        *table(rows),
    ]
    write("optimizers-gepa", "\n".join(lines))


def main() -> None:
    import logging

    import dspy
    from tests.teleprompt._oracle import exact, trainset

    import dspex
    from dspex.teleprompt import COPRO, BootstrapFewShot, BootstrapFewShotWithRandomSearch

    logging.disable(logging.WARNING)
    proc, url = start()
    rows = []
    try:
        cases = [
            (
                "BootstrapFewShot (20 train, defaults)",
                lambda: dspy.BootstrapFewShot(metric=exact),
                lambda: BootstrapFewShot(metric=exact, num_threads=NUM_THREADS),
                {"trainset": True},
            ),
            (
                "BootstrapFewShot (20 train, max_bootstrapped_demos=8, max_rounds=2)",
                lambda: dspy.BootstrapFewShot(metric=exact, max_bootstrapped_demos=8, max_rounds=2),
                lambda: BootstrapFewShot(
                    metric=exact, max_bootstrapped_demos=8, max_rounds=2, num_threads=NUM_THREADS
                ),
                {"trainset": True},
            ),
            (
                "BootstrapFewShotWithRandomSearch (8 candidates, 20 train / 20 val)",
                lambda: dspy.BootstrapFewShotWithRandomSearch(
                    metric=exact, num_candidate_programs=8, num_threads=NUM_THREADS
                ),
                lambda: BootstrapFewShotWithRandomSearch(
                    metric=exact, num_candidate_programs=8, num_threads=NUM_THREADS
                ),
                {"trainset": True, "valset": True},
            ),
            (
                "COPRO (breadth=4, depth=2, 10 train)",
                lambda: dspy.COPRO(metric=exact, breadth=4, depth=2),
                lambda: COPRO(metric=exact, breadth=4, depth=2),
                {"copro": True},
            ),
        ]
        for name, theirs, ours, data in cases:

            def kwargs(lib: Any, data: dict[str, bool] = data) -> dict[str, Any]:
                if data.get("copro"):
                    return {
                        "trainset": trainset(lib, TRAIN[:10]),
                        "eval_kwargs": {"num_threads": NUM_THREADS, "display_progress": False},
                    }
                out = {"trainset": trainset(lib, TRAIN)}
                if data.get("valset"):
                    out["valset"] = trainset(lib, VAL)
                return out

            d_wall, d_calls, d_state = run(dspy, url, theirs, **kwargs(dspy))
            n_wall, n_calls, n_state = run(dspex, url, ours, **kwargs(dspex))
            rows.append((name, d_wall, n_wall, d_calls, n_calls, d_state == n_state))
        rows.append(gepa_light(url))
    finally:
        proc.terminate()
        proc.wait(5)

    lines = [
        "## Optimizers (`dspex.teleprompt`, issue 15)",
        "",
        f"`benchmarks/bench_optimizers.py`: one LMServer process, {LATENCY * 1000:.0f} ms per "
        f"request, cache off, `num_threads={NUM_THREADS}` on both sides, a 2-predictor user "
        "Module (Predict + ChainOfThought). One run on a shared 2-core machine (other helpers "
        "were running): noisy. *same state*: the compiled programs' `dump_state()` are equal.",
        "",
        *table(rows),
    ]
    lines.append("")
    lines.append("MIPROv2 light: `--mipro` (its own section).")
    write("optimizers", "\n".join(lines))


def mipro_main() -> None:
    """MIPROv2 ``auto="light"`` on the 2-predictor program, DSPy and DSPex side by side.

    20 train / 20 val examples: light mode samples the valset (20 kept), so no minibatching:
    6 demo sets, 3 instructions per predictor, 20 trials, each a full evaluation. Both sides
    must end with the same compiled state (they send the same requests: the parity test)."""
    import logging

    import dspy
    from tests.teleprompt._oracle import exact, trainset

    import dspex
    from dspex.teleprompt import MIPROv2

    logging.disable(logging.WARNING)
    proc, url = start()
    try:

        def data(lib: Any) -> dict[str, Any]:
            return {"trainset": trainset(lib, TRAIN), "valset": trainset(lib, VAL)}

        d_wall, d_calls, d_state = run(
            dspy,
            url,
            lambda: dspy.MIPROv2(metric=exact, auto="light", num_threads=NUM_THREADS),
            **data(dspy),
        )
        n_wall, n_calls, n_state = run(
            dspex,
            url,
            lambda: MIPROv2(metric=exact, auto="light", num_threads=NUM_THREADS),
            **data(dspex),
        )
    finally:
        proc.terminate()
        proc.wait(5)
    lines = [
        "### MIPROv2 light (native, stop 18)",
        "",
        f"`python benchmarks/bench_optimizers.py --mipro`: one LMServer process, "
        f"{LATENCY * 1000:.0f} ms per request, cache off, `num_threads={NUM_THREADS}` on both "
        'sides, the same 2-predictor user Module, 20 train / 20 val, `auto="light"` (6 demo '
        "sets, 3 instructions per predictor, 20 full-valset trials). One run on a shared 2-core "
        "machine (other helpers were running): noisy.",
        "",
        "| compile | DSPy 3.4.1 | DSPex native | speed-up | LM calls DSPy / DSPex | same state |",
        "|---|---:|---:|---:|---:|:---:|",
        f"| MIPROv2 light (20 train / 20 val) | {d_wall:.2f} s | {n_wall:.2f} s | "
        f"{d_wall / n_wall:.1f}x | {d_calls} / {n_calls} | {'yes' if d_state == n_state else 'NO'} |",
    ]
    write("optimizers-mipro", "\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]))
    elif sys.argv[1:] == ["--only", "gepa"]:
        main_gepa()
    elif sys.argv[1:] == ["--mipro"]:
        mipro_main()
    else:
        main()
