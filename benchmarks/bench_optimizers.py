"""Native optimizers vs DSPy 3.4.1 in process: compile wall time and LM calls (issue 15).

One run, one LMServer in its own process with 20 ms latency per request, answering by the
rule in ``tests/teleprompt/_oracle.py`` (some examples pass the metric, some fail, some pass
only on a later round). Cache off on both sides; the same program (a user Module with a
``Predict`` and a ``ChainOfThought``), trainset, metric and ``num_threads`` on both sides.
Each side's compiled state is checked equal before its time is reported.

Rows: BootstrapFewShot (20 train examples), BootstrapFewShotWithRandomSearch (8 candidate
programs, 20 train / 20 val), COPRO (breadth 4, depth 2), GEPA light (20 train / 20 val; the
reflection LM's instructions fix the multiples of 7 the oracle gets wrong, so candidates are
accepted and re-scored on the valset), SIMBA (20 train, bsize 8, 4 candidates, 3 steps; its
questions are marked so the server answers them by the rule of
``tests/teleprompt/test_simba_parity.py``: answers depend on the whole prompt and
``OfferFeedback`` prompts get one rule per module, so both strategies run); MIPROv2 light.
LM calls are counted by the server: DSPy 3.4.1's client sends a call with ``n=k`` as ``k``
requests, DSPex's as one request (COPRO's proposals).

    python benchmarks/bench_optimizers.py                      # every section
    python benchmarks/bench_optimizers.py --only gepa          # one section
    python benchmarks/bench_optimizers.py --only mipro,resume  # some sections

Sections: ``core`` (BootstrapFewShot, random search, COPRO), ``copro`` (COPRO alone, not run
by default), ``mipro``, ``gepa``, ``simba``, ``resume`` (kill -9 part-way and resume: MIPROv2
light at half of its trials, and random search), each written to its own
``results/optimizers*.md``.
"""

from __future__ import annotations

import importlib
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
    # SIMBA's row: the parity test's rule (answers depend on the prompt and temperature;
    # OfferFeedback prompts get one rule per module), imported now, not on first use
    from tests.teleprompt.test_simba_parity import reply as simba_reply

    server.add_rule(SIMBA_MARK, simba_reply)
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


class CriticalPath:
    """A ``gepa`` callback (an observer: it changes nothing) recording the run's phases on its
    critical path, in order: ``("eval", n)`` for an evaluation of ``n`` examples (minibatch,
    merge subsample or valset), ``("reflect", k)`` for a proposal of ``k`` components."""

    def __init__(self) -> None:
        self.phases: list[tuple[str, int]] = []
        self.iterations = 0
        self.merges = 0

    def on_iteration_start(self, event: Any) -> None:
        self.iterations += 1

    def on_evaluation_start(self, event: Any) -> None:
        self.phases.append(("eval", int(event["batch_size"])))

    def on_valset_evaluated(self, event: Any) -> None:
        self.phases.append(("eval", int(event["num_examples_evaluated"])))

    def on_proposal_start(self, event: Any) -> None:
        self.phases.append(("reflect", len(event["components"])))

    def on_merge_attempted(self, event: Any) -> None:
        self.merges += 1

    def round_trips(self) -> int:
        """LM round trips in sequence: an example runs its two predictors one after the other,
        ``NUM_THREADS`` examples at a time; a reflection is one call per component."""
        return sum(2 * -(-n // NUM_THREADS) if kind == "eval" else n for kind, n in self.phases)


def replay(url: str, phases: list[tuple[str, int]]) -> float:
    """Wall time of ``phases`` replayed by a minimal client (one persistent HTTP connection per
    thread, a reused pool of ``NUM_THREADS`` threads, a fixed small request): what the LM
    server and this machine allow for the critical path, with no program around it."""
    import http.client
    import threading
    import urllib.parse
    from concurrent.futures import ThreadPoolExecutor

    target = urllib.parse.urlparse(url)
    local = threading.local()
    system = (
        "Your input fields are:\n1. `question` (str):\nYour output fields are:\n1. `answer` "
        "(str):\nAll interactions will be structured in the following way, with the "
        "appropriate values filled in.\n\n[[ ## question ## ]]\n{question}\n\n"
        "[[ ## answer ## ]]\n{answer}\n\n[[ ## completed ## ]]\nIn adhering to this "
        "structure, your objective is: \n        Given the fields `question`, produce the "
        "fields `answer`."
    )
    user = (
        "[[ ## question ## ]]\nIs 4 even or odd?\n\nRespond with the corresponding output "
        "fields, starting with the field `[[ ## answer ## ]]`, and then ending with the marker "
        "for `[[ ## completed ## ]]`."
    )
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    body = json.dumps({"model": "floor", "messages": messages}).encode()

    def call() -> None:
        if getattr(local, "conn", None) is None:
            local.conn = http.client.HTTPConnection(target.hostname, target.port)
        local.conn.request(
            "POST", "/v1/chat/completions", body, {"Content-Type": "application/json"}
        )
        local.conn.getresponse().read()

    def example(_: int) -> None:
        call()
        call()

    with ThreadPoolExecutor(NUM_THREADS) as pool:
        start = time.perf_counter()
        for kind, n in phases:
            if kind == "eval":
                list(pool.map(example, range(n)))
            else:
                for _ in range(n):
                    call()
        return time.perf_counter() - start


def gepa_light(url: str) -> tuple[tuple[str, float, float, int, int, bool], list[str]]:
    """The GEPA light row (``auto="light"`` on the 2-predictor program, same seed both sides)
    and its critical path: the phases counted on both sides, the lower bound, the replay."""
    import dspy
    from tests.teleprompt._oracle import trainset

    import dspex
    from dspex.teleprompt import GEPA

    paths = {"dspy": CriticalPath(), "dspex": CriticalPath()}

    def make(lib: Any, cls: Any) -> Any:
        reflection = lib.LM("openai/reflect", api_base=url, api_key="k", cache=False, num_retries=0)
        return lambda: cls(
            metric=gepa_metric,
            auto="light",
            reflection_lm=reflection,
            num_threads=NUM_THREADS,
            gepa_kwargs={"callbacks": [paths[lib.__name__]]},
        )

    def data(lib: Any) -> dict[str, Any]:
        return {"trainset": trainset(lib, TRAIN), "valset": trainset(lib, VAL)}

    d_wall, d_calls, d_state = run(dspy, url, make(dspy, dspy.GEPA), **data(dspy))
    n_wall, n_calls, n_state = run(dspex, url, make(dspex, GEPA), **data(dspex))
    name = "GEPA light (2 predictors, 20 train / 20 val)"
    path = paths["dspex"]
    trips = path.round_trips()
    bound = trips * LATENCY
    floor = replay(url, path.phases)
    evals = [n for kind, n in path.phases if kind == "eval"]
    reflections = sum(n for kind, n in path.phases if kind == "reflect")
    same = "the same" if paths["dspy"].phases == path.phases else "NOT the same"
    notes = [
        "",
        f"Critical path (counted by a `gepa` callback; {same} phases on both sides): "
        f"{path.iterations} iterations, {len(evals)} evaluations ({sum(evals)} examples), "
        f"{reflections} reflection calls, {path.merges} merge attempts = **{trips} LM round "
        f"trips** in sequence (an evaluation of n examples: 2 x ceil(n / {NUM_THREADS}), the "
        "program's two predictors one after the other; a reflection: 1). Lower bound "
        f"{trips} x {LATENCY * 1000:.0f} ms = **{bound:.2f} s**; the same critical path replayed "
        f"by a minimal client (persistent connections, no program): **{floor:.2f} s**. "
        f"DSPy {d_wall / bound:.2f}x the bound ({d_wall / floor:.2f}x the replay), "
        f"DSPex {n_wall / bound:.2f}x ({n_wall / floor:.2f}x); the most any runtime sending "
        f"these requests can be faster than DSPy here is {d_wall / floor:.2f}x (replay) to "
        f"{d_wall / bound:.2f}x (bound).",
    ]
    return (name, d_wall, n_wall, d_calls, n_calls, d_state == n_state), notes


def gepa_section(url: str) -> list[str]:
    row, notes = gepa_light(url)
    return [HARNESS, "", *table([row]), *notes]


SIMBA_MARK = "(simba)"


def simba_row(url: str) -> tuple[str, float, float, int, int, bool]:
    """The SIMBA row: the same arguments, seed and marked trainset on both sides."""
    import dspy
    from tests.teleprompt._oracle import exact

    import dspex
    from dspex.teleprompt import SIMBA

    args = {"bsize": 8, "num_candidates": 4, "max_steps": 3, "max_demos": 2}

    def data(lib: Any) -> dict[str, Any]:
        examples = [
            lib.Example(
                question=f"Is {n} even or odd? {SIMBA_MARK}",
                answer="even" if n % 2 == 0 else "odd",
            ).with_inputs("question")
            for n in TRAIN
        ]
        return {"trainset": examples, "seed": 5}

    make_theirs = lambda: dspy.SIMBA(metric=exact, num_threads=NUM_THREADS, **args)  # noqa: E731
    make_ours = lambda: SIMBA(metric=exact, num_threads=NUM_THREADS, **args)  # noqa: E731
    d_wall, d_calls, d_state = run(dspy, url, make_theirs, **data(dspy))
    n_wall, n_calls, n_state = run(dspex, url, make_ours, **data(dspex))
    name = "SIMBA (20 train, bsize=8, num_candidates=4, max_steps=3, seed=5)"
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


RESUME_CASES: dict[str, dict[str, Any]] = {
    "mipro": {
        "name": 'MIPROv2 auto="light" (20 train / 20 val)',
        "config": {"kind": "mipro", "auto": "light"},
        "kill": "at half of its search trials",
    },
    "random_search": {
        "name": "BootstrapFewShotWithRandomSearch (8 candidates, 20 train / 20 val)",
        "config": {"kind": "random_search", "candidates": 8},
        "kill": "at half of the uninterrupted run's paid calls",
    },
}


def _trials_scored(run_dir: Path) -> int:
    """The search trials a MIPROv2 run directory has checkpointed (0 before the search)."""
    try:
        saved = json.loads((run_dir / "checkpoints" / "search.json").read_text())
    except (OSError, ValueError):
        return 0
    return sum(key.startswith("trial ") for key in saved["state"]["scores"])


def resume_row(url: str, case: str) -> dict[str, Any]:
    """One optimizer with ``run_dir``, each compile in its own process
    (``tests/teleprompt/_run_child.py``) with its own on-disk LM cache: an uninterrupted run,
    then a run killed with SIGKILL part-way (MIPROv2: once half of the uninterrupted run's
    search trials are checkpointed; random search: once the server has answered half as many
    requests as the uninterrupted run paid) and started again with the same run dir. Paid LM
    calls are counted by the server; the final states are compared."""
    import shutil
    import signal
    import tempfile

    config = {
        **RESUME_CASES[case]["config"],
        "threads": NUM_THREADS,
        "numbers": TRAIN,
        "val": VAL,
        "url": url,
    }
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    tmp = Path(tempfile.mkdtemp(prefix="bench-resume-"))

    def child(name: str, **extra: Any) -> subprocess.Popen[bytes]:
        cfg = {
            **config,
            "cache_dir": str(tmp / f"cache-{name}"),
            "run_dir": str(tmp / f"run-{name}"),
            "out": str(tmp / f"{name}.json"),
            **extra,
        }
        cmd = [sys.executable, "-m", "tests.teleprompt._run_child", json.dumps(cfg)]
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.DEVNULL)

    try:
        before, start = requests_so_far(url), time.perf_counter()
        if child("whole").wait() != 0:
            raise RuntimeError("the uninterrupted compile failed")
        whole_wall, whole_paid = time.perf_counter() - start, requests_so_far(url) - before
        trials = _trials_scored(tmp / "run-whole")

        def due() -> bool:
            if case == "mipro":
                return _trials_scored(tmp / "run-resumed") >= trials // 2
            return requests_so_far(url) - before >= whole_paid // 2

        before, start = requests_so_far(url), time.perf_counter()
        proc = child("resumed")
        checkpoints = tmp / "run-resumed" / "checkpoints"
        while not due():
            if proc.poll() is not None:
                raise RuntimeError("the compile ended before it could be killed")
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_paid = requests_so_far(url) - before
        saved = _trials_scored(tmp / "run-resumed") if case == "mipro" else None
        saved = saved if saved is not None else len(list(checkpoints.glob("*.json")))
        if child("resumed").wait() != 0:
            raise RuntimeError("the resumed compile failed")
        resumed_wall, resumed_paid = time.perf_counter() - start, requests_so_far(url) - before
        same = (
            json.loads((tmp / "whole.json").read_text())["state"]
            == json.loads((tmp / "resumed.json").read_text())["state"]
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "case": case,
        "trials": trials,
        "whole_paid": whole_paid,
        "killed_paid": killed_paid,
        "saved": saved,
        "total_paid": resumed_paid,
        "whole_wall": whole_wall,
        "resumed_wall": resumed_wall,
        "same": same,
    }


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


def core_rows(url: str) -> list[tuple[str, float, float, int, int, bool]]:
    """BootstrapFewShot (twice), BootstrapFewShotWithRandomSearch and COPRO."""
    import dspy
    from tests.teleprompt._oracle import exact, trainset

    import dspex
    from dspex.teleprompt import BootstrapFewShot, BootstrapFewShotWithRandomSearch

    cases = [
        (
            "BootstrapFewShot (20 train, defaults)",
            lambda: dspy.BootstrapFewShot(metric=exact),
            lambda: BootstrapFewShot(metric=exact, num_threads=NUM_THREADS),
            {},
        ),
        (
            "BootstrapFewShot (20 train, max_bootstrapped_demos=8, max_rounds=2)",
            lambda: dspy.BootstrapFewShot(metric=exact, max_bootstrapped_demos=8, max_rounds=2),
            lambda: BootstrapFewShot(
                metric=exact, max_bootstrapped_demos=8, max_rounds=2, num_threads=NUM_THREADS
            ),
            {},
        ),
        (
            "BootstrapFewShotWithRandomSearch (8 candidates, 20 train / 20 val)",
            lambda: dspy.BootstrapFewShotWithRandomSearch(
                metric=exact, num_candidate_programs=8, num_threads=NUM_THREADS
            ),
            lambda: BootstrapFewShotWithRandomSearch(
                metric=exact, num_candidate_programs=8, num_threads=NUM_THREADS
            ),
            {"valset": True},
        ),
        _copro_case(),
    ]

    def kwargs(lib: Any, data: dict[str, bool]) -> dict[str, Any]:
        if data.get("copro"):
            return {
                "trainset": trainset(lib, TRAIN[:10]),
                "eval_kwargs": {"num_threads": NUM_THREADS, "display_progress": False},
            }
        out = {"trainset": trainset(lib, TRAIN)}
        if data.get("valset"):
            out["valset"] = trainset(lib, VAL)
        return out

    rows = []
    for name, theirs, ours, data in cases:
        d_wall, d_calls, d_state = run(dspy, url, theirs, **kwargs(dspy, data))
        n_wall, n_calls, n_state = run(dspex, url, ours, **kwargs(dspex, data))
        rows.append((name, d_wall, n_wall, d_calls, n_calls, d_state == n_state))
    return rows


def _copro_case() -> tuple[str, Any, Any, dict[str, bool]]:
    """COPRO's row: breadth 4, depth 2 on 10 training examples (``core`` and ``copro``)."""
    import dspy
    from tests.teleprompt._oracle import exact

    from dspex.teleprompt import COPRO

    return (
        "COPRO (breadth=4, depth=2, 10 train)",
        lambda: dspy.COPRO(metric=exact, breadth=4, depth=2),
        lambda: COPRO(metric=exact, breadth=4, depth=2),
        {"copro": True},
    )


def copro_row(url: str) -> tuple[str, float, float, int, int, bool]:
    """The COPRO row alone (the same row as in ``core``)."""
    import dspy
    from tests.teleprompt._oracle import trainset

    import dspex

    name, theirs, ours, _ = _copro_case()

    def data(lib: Any) -> dict[str, Any]:
        return {
            "trainset": trainset(lib, TRAIN[:10]),
            "eval_kwargs": {"num_threads": NUM_THREADS, "display_progress": False},
        }

    d_wall, d_calls, d_state = run(dspy, url, theirs, **data(dspy))
    n_wall, n_calls, n_state = run(dspex, url, ours, **data(dspex))
    return name, d_wall, n_wall, d_calls, n_calls, d_state == n_state


def mipro_row(url: str) -> tuple[str, float, float, int, int, bool]:
    """MIPROv2 ``auto="light"`` on the 2-predictor program, DSPy and DSPex side by side.

    20 train / 20 val examples: light mode samples the valset (20 kept), so no minibatching:
    6 demo sets, 3 instructions per predictor, 20 trials, each a full evaluation. Both sides
    must end with the same compiled state (they send the same requests: the parity test)."""
    import dspy
    from tests.teleprompt._oracle import exact, trainset

    import dspex
    from dspex.teleprompt import MIPROv2

    def data(lib: Any) -> dict[str, Any]:
        return {"trainset": trainset(lib, TRAIN), "valset": trainset(lib, VAL)}

    theirs = lambda: dspy.MIPROv2(metric=exact, auto="light", num_threads=NUM_THREADS)  # noqa: E731
    ours = lambda: MIPROv2(metric=exact, auto="light", num_threads=NUM_THREADS)  # noqa: E731
    d_wall, d_calls, d_state = run(dspy, url, theirs, **data(dspy))
    n_wall, n_calls, n_state = run(dspex, url, ours, **data(dspex))
    name = "MIPROv2 light (20 train / 20 val)"
    return name, d_wall, n_wall, d_calls, n_calls, d_state == n_state


def resume_lines(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| optimizer | run | paid LM calls | wall (incl. process start) | same state |",
        "|---|---|---:|---:|:---:|",
    ]
    for r in results:
        case = RESUME_CASES[r["case"]]
        progress = (
            f"{r['saved']} of {r['trials']} trials checkpointed"
            if r["case"] == "mipro"
            else f"{r['saved']} checkpoints"
        )
        lines += [
            f"| {case['name']} | uninterrupted | {r['whole_paid']} | {r['whole_wall']:.2f} s | |",
            f"| | killed {case['kill']} ({r['killed_paid']} paid calls, {progress}) + resumed"
            f" | {r['total_paid']} (**{r['total_paid'] / r['whole_paid']:.3f}x**) | "
            f"{r['resumed_wall']:.2f} s | {'yes' if r['same'] else 'NO'} |",
        ]
    return lines


HARNESS = (
    f"One LMServer process, {LATENCY * 1000:.0f} ms per request, cache off, "
    f"`num_threads={NUM_THREADS}` on both sides, the same 2-predictor user Module "
    "(Predict + ChainOfThought) and data on both sides. One run on a shared 2-core machine "
    "(other helpers were running): noisy. *same state*: the compiled programs' `dump_state()` "
    "are equal."
)
RESUME_NOTE = (
    f"One LMServer process, {LATENCY * 1000:.0f} ms per request, the 2-predictor user Module, "
    "20 train / 20 val. Resume (`run_dir`, DSPex only): each compile in its own process with its own on-disk LM "
    f"cache, `num_threads={NUM_THREADS}`; the second run is killed with SIGKILL part-way and "
    "started again with the same run dir. *paid*: requests the server answered (requests in "
    "flight at the kill are paid again)."
)

SECTIONS: dict[str, tuple[str, str, Any]] = {
    # name: (results file, title, rows(url) -> markdown lines)
    "core": (
        "optimizers",
        "## Optimizers (`dspex.teleprompt`, issue 15)",
        lambda url: [HARNESS, "", *table(core_rows(url))],
    ),
    "mipro": (
        "optimizers-mipro",
        "### MIPROv2 light",
        lambda url: [HARNESS, "", *table([mipro_row(url)])],
    ),
    "gepa": (
        "optimizers-gepa",
        "### GEPA light",
        gepa_section,
    ),
    "simba": ("optimizers-simba", "### SIMBA", lambda url: [HARNESS, "", *table([simba_row(url)])]),
    "copro": ("optimizers-copro", "### COPRO", lambda url: [HARNESS, "", *table([copro_row(url)])]),
    "resume": (
        "optimizers-resume",
        "### Resume after kill -9",
        lambda url: [RESUME_NOTE, "", *resume_lines([resume_row(url, c) for c in RESUME_CASES])],
    ),
}


def main(argv: list[str]) -> None:
    """``[--only name[,name...]]`` (sections: core, copro, mipro, gepa, simba, resume; default
    all but ``copro``, whose row ``core`` has);
    ``--mipro`` is ``--only mipro``. Each section writes ``results/<file>.md``."""
    import logging

    names = [name for name in SECTIONS if name != "copro"]
    if argv == ["--mipro"]:
        names = ["mipro"]
    elif len(argv) == 2 and argv[0] == "--only":
        names = argv[1].split(",")
    elif argv:
        raise SystemExit(f"usage: bench_optimizers.py [--only {','.join(SECTIONS)}] | --mipro")
    unknown = [name for name in names if name not in SECTIONS]
    if unknown:
        raise SystemExit(f"unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    logging.disable(logging.WARNING)
    # both libraries import these lazily inside their first compile; import them before any
    # timing so that neither side's measured compile pays for it (anyio's asyncio backend:
    # DSPex's first sync-forward program run in a worker thread loads it)
    for heavy in ("optuna", "gepa", "numpy", "numpy.random", "anyio._backends._asyncio"):
        importlib.import_module(heavy)
    proc, url = start()
    try:
        for name in names:
            results_file, title, lines = SECTIONS[name]
            arg = f"--only {name}"
            write(
                results_file,
                "\n".join(
                    [
                        f"{title} (`benchmarks/bench_optimizers.py {arg}`)",
                        "",
                        *lines(url),
                    ]
                ),
            )
    finally:
        proc.terminate()
        proc.wait(5)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]))
    else:
        main(sys.argv[1:])
