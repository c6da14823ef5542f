"""Run every benchmark and assemble ``benchmarks/RESULTS.md`` from their sections.

Usage: ``.venv/bin/python benchmarks/run_all.py [name ...]`` (names: core, lm, lmserver, pool,
pool_floor, bridge, router, pipeline, server, evaluate, modules; default all). Each ``bench_<name>.py`` writes
``benchmarks/results/<name>.md``; this script runs them one after another (never in parallel:
the machine has two cores) and concatenates the sections in a fixed order.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = [
    "core",
    "lmserver",
    "lm",
    "pool",
    "pool_floor",
    "bridge",
    "router",
    "pipeline",
    "server",
    "evaluate",
    "modules",
    "optimizers",
    "sandbox",
]


def main(argv: list[str]) -> int:
    wanted = argv or ORDER
    failed: list[str] = []
    for name in wanted:
        script = HERE / f"bench_{name}.py"
        if not script.exists():
            print(f"-- {name}: no {script.name}, skipped")
            continue
        print(f"-- {name}: running {script.name}", flush=True)
        env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        if subprocess.run([sys.executable, str(script)], env=env, check=False).returncode != 0:
            failed.append(name)
    assemble()
    if failed:
        print(f"benchmarks failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def assemble() -> None:
    cpu = platform.processor() or platform.machine()
    header = [
        "# Benchmark results",
        "",
        "Measured side by side with DSPy 3.4.1 in the same run, on the same machine, against the",
        "same local LM server (`dspex.testing.LMServer`). Ratios are what matter: the machines",
        "are shared and noisy. Regenerate with `make bench` (or `.venv/bin/python",
        "benchmarks/run_all.py [core lm pool ...]`).",
        "",
        f"- assembled: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- machine: {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}",
        "",
    ]
    sections = []
    for name in ORDER:
        path = HERE / "results" / f"{name}.md"
        if path.exists():
            sections.append(path.read_text().strip() + "\n")
    (HERE / "RESULTS.md").write_text("\n".join(header) + "\n" + "\n".join(sections))
    print(f"wrote {HERE / 'RESULTS.md'}")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
