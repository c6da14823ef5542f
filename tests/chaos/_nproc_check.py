"""Run as a non-root user by test_nproc_nonroot.py: prints one JSON line of findings."""

from __future__ import annotations

import json
import os
import sys

import dspex
from dspex.bridge.session import _nproc_default, dspy_pool
from dspex.pool import Pool

dspex.configure(cache_dir=sys.argv[1])
out: dict[str, object] = {"uid": os.getuid(), "default": _nproc_default()}
pool = dspy_pool()
pool.start_sync()
limits = []
for pid in pool.stats()["pids"]:
    with open(f"/proc/{pid}/limits") as f:
        line = next(x for x in f if x.startswith("Max processes"))
    limits.append(line.split()[2:4])
out["dspy_worker_limits"] = limits
pool.close_sync()
cap = int(out["default"]) - 2048 + 30  # what this user runs now, plus 30
forker = Pool(
    target="nproc_handler:make",
    size=1,
    pythonpath=(os.path.dirname(os.path.abspath(__file__)),),
    max_processes=cap,
    name="nproc",
)
forker.start_sync()
out["forker_limit"] = forker.call_sync("limit")
out["forks"] = forker.call_sync("fork_many", 500)
forker.close_sync()
print(json.dumps(out))
