"""Native optimizers vs DSPy 3.4.1 in process: compile wall time and LM calls (issue 15).

One run, one LMServer in its own process with 20 ms latency per request, answering by the
rule in ``tests/teleprompt/_oracle.py`` (some examples pass the metric, some fail, some pass
only on a later round). Cache off on both sides; the same program (a user Module with a
``Predict`` and a ``ChainOfThought``), trainset, metric and ``num_threads`` on both sides.
Each side's compiled state is checked equal before its time is reported.

Rows: BootstrapFewShot (20 train examples), BootstrapFewShotWithRandomSearch (8 candidate
programs, 20 train / 20 val), COPRO (breadth 4, depth 2), SIMBA (20 train, bsize 8, 4
candidates, 3 steps; its questions are marked so the server answers them by the rule of
``tests/teleprompt/test_simba_parity.py``: answers depend on the whole prompt and
``OfferFeedback`` prompts get one rule per module, so both strategies run). MIPROv2 light
and GEPA light are not native yet (not measured). LM calls are counted by the server: DSPy
3.4.1's client sends a call with ``n=k`` as ``k`` requests, DSPex's as one request (COPRO's
proposals).

    python benchmarks/bench_optimizers.py
    python benchmarks/bench_optimizers.py --only SIMBA   # the rows whose name starts so
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
SIMBA_MARK = "(simba)"


def simba_trainset(lib: Any) -> list[Any]:
    return [
        lib.Example(
            question=f"Is {n} even or odd? {SIMBA_MARK}", answer="even" if n % 2 == 0 else "odd"
        ).with_inputs("question")
        for n in TRAIN
    ]


def serve(port: int) -> None:
    """The server process: the oracle rule, 20 ms per request, and a request counter."""
    import threading

    from tests.teleprompt._oracle import oracle

    from dspex.testing import LMServer

    server = LMServer(port=port, latency=LATENCY).start()
    server.add_rule(
        COUNT, lambda _req: str(sum(COUNT not in r.body.decode() for r in server.requests))
    )
    # SIMBA's rows: the parity test's rule (answers depend on the prompt and temperature;
    # OfferFeedback prompts get one rule per module), imported now, not on first use
    from tests.teleprompt.test_simba_parity import reply as simba_reply

    server.add_rule(SIMBA_MARK, simba_reply)
    server.add_rule(None, oracle)
    print("ready", flush=True)
    threading.Event().wait()


def simba_case() -> tuple[str, Any, Any, dict[str, bool]]:
    import dspy
    from tests.teleprompt._oracle import exact

    from dspex.teleprompt import SIMBA

    args = {"bsize": 8, "num_candidates": 4, "max_steps": 3, "max_demos": 2}
    return (
        "SIMBA (20 train, bsize=8, num_candidates=4, max_steps=3, seed=5)",
        lambda: dspy.SIMBA(metric=exact, num_threads=NUM_THREADS, **args),
        lambda: SIMBA(metric=exact, num_threads=NUM_THREADS, **args),
        {"simba": True},
    )


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


def main(only: str | None = None) -> None:
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
            simba_case(),
        ]
        cases = [case for case in cases if only is None or case[0].startswith(only)]
        for name, theirs, ours, data in cases:

            def kwargs(lib: Any, data: dict[str, bool] = data) -> dict[str, Any]:
                if data.get("copro"):
                    return {
                        "trainset": trainset(lib, TRAIN[:10]),
                        "eval_kwargs": {"num_threads": NUM_THREADS, "display_progress": False},
                    }
                if data.get("simba"):
                    return {"trainset": simba_trainset(lib), "seed": 5}
                out = {"trainset": trainset(lib, TRAIN)}
                if data.get("valset"):
                    out["valset"] = trainset(lib, VAL)
                return out

            d_wall, d_calls, d_state = run(dspy, url, theirs, **kwargs(dspy))
            n_wall, n_calls, n_state = run(dspex, url, ours, **kwargs(dspex))
            rows.append((name, d_wall, n_wall, d_calls, n_calls, d_state == n_state))
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
        "| compile | DSPy 3.4.1 | DSPex native | speed-up | LM calls DSPy / DSPex | same state |",
        "|---|---:|---:|---:|---:|:---:|",
    ]
    for name, d_wall, n_wall, d_calls, n_calls, same in rows:
        lines.append(
            f"| {name} | {d_wall:.2f} s | {n_wall:.2f} s | {d_wall / n_wall:.1f}x | "
            f"{d_calls} / {n_calls} | {'yes' if same else 'NO'} |"
        )
    if only is None:
        lines.append("")
        lines.append("MIPROv2 light and GEPA light: not native yet, not measured.")
    write("optimizers" if only is None else f"optimizers-{only}", "\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]))
    elif len(sys.argv) == 3 and sys.argv[1] == "--only":
        main(sys.argv[2])
    else:
        main()
