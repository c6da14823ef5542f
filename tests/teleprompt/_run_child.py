"""A compile in its own process, for the resume tests (``python -m tests.teleprompt._run_child
<json config>``): writes the compiled state and run summary as JSON to ``config["out"]``.

With ``block_after=n`` the metric's n-th call writes ``config["marker"]`` and then blocks for
good, so the test can kill -9 the process at a known point of the run (no sleeps, no races).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import dspex
from dspex.teleprompt import (
    COPRO,
    GEPA,
    SIMBA,
    BootstrapFewShot,
    BootstrapFewShotWithRandomSearch,
    MIPROv2,
)
from tests.teleprompt import _oracle

NUMBERS = [2, 9, 4, 7, 5, 15, 6, 8, 10, 11, 12, 13, 16, 17, 18, 19, 20, 21, 22, 23]
CONFIG: dict[str, Any] = {}
_calls = 0


def metric(example: Any, prediction: Any, trace: Any = None) -> bool:
    global _calls
    _calls += 1
    if _calls == CONFIG.get("block_after"):
        Path(CONFIG["marker"]).write_text(str(_calls))
        while True:  # the test kills this process here
            time.sleep(0.05)
    return _oracle.exact(example, prediction, trace)


def gepa_metric(
    gold: Any, pred: Any, trace: Any = None, pred_name: Any = None, pred_trace: Any = None
) -> float:
    return float(metric(gold, pred, trace))


def build(kind: str) -> Any:
    common: dict[str, Any] = {"run_dir": CONFIG.get("run_dir")}
    if CONFIG.get(
        "resume"
    ):  # started again with resume=<run dir> (BootstrapFewShot, random search, MIPROv2)
        common = {"resume": CONFIG["run_dir"]}
    if CONFIG.get("max_cost") is not None:
        common["max_cost"] = CONFIG["max_cost"]
    if kind == "bootstrap":
        return BootstrapFewShot(
            metric=metric, max_bootstrapped_demos=20, num_threads=CONFIG.get("threads"), **common
        )
    if kind == "random_search":
        return BootstrapFewShotWithRandomSearch(
            metric=metric,
            num_candidate_programs=CONFIG.get("candidates", 4),
            num_threads=CONFIG.get("threads"),
            **common,
        )
    if kind == "mipro":
        auto = CONFIG.get("auto")
        sizes = {} if auto else {"num_candidates": CONFIG.get("candidates", 3)}
        return MIPROv2(
            metric=metric,
            auto=auto,
            **sizes,
            num_threads=CONFIG.get("threads"),
            display_progress=False,
            **common,
        )
    if kind == "gepa":
        reflection = dspex.LM("openai/reflect", api_base=CONFIG["url"], api_key="k", num_retries=0)
        return GEPA(
            metric=gepa_metric,
            max_metric_calls=CONFIG.get("metric_calls", 120),
            reflection_lm=reflection,
            num_threads=CONFIG.get("threads"),
            track_stats=True,
            **common,
        )
    if kind == "simba":
        return SIMBA(
            metric=metric,
            bsize=4,
            num_candidates=2,
            max_steps=4,
            max_demos=2,
            num_threads=CONFIG.get("threads"),
            display_progress=False,
            **common,
        )
    return COPRO(metric=metric, breadth=3, depth=3, **common)


def main() -> None:
    CONFIG.update(json.loads(sys.argv[1]))
    kind = CONFIG["kind"]
    lm = dspex.LM(
        CONFIG.get("model", "openai/test"), api_base=CONFIG["url"], api_key="k", num_retries=0
    )
    numbers = CONFIG.get("numbers") or NUMBERS[: CONFIG.get("examples", len(NUMBERS))]
    with dspex.context(lm=lm, cache_dir=Path(CONFIG["cache_dir"])):
        optimizer = build(kind)  # MIPROv2 takes its models from the context
        kwargs: dict[str, Any] = {"trainset": _oracle.trainset(dspex, numbers)}
        if kind == "copro":
            kwargs["eval_kwargs"] = {"num_threads": CONFIG.get("threads") or 1}
        if kind in ("mipro", "simba"):
            kwargs.update(CONFIG.get("compile", {}))
        if CONFIG.get("val"):
            kwargs["valset"] = _oracle.trainset(dspex, CONFIG["val"])
        compiled = optimizer.compile(_oracle.two_step(dspex), **kwargs)
    out = {
        "state": compiled.dump_state(),
        "summary": compiled.run_summary.to_dict(),
        "text": str(compiled.run_summary),
    }
    if kind == "mipro":  # the search's scores, in trial order
        out["scores"] = [c["score"] for c in compiled.candidate_programs]
        out["trials"] = {
            str(n): {
                k: v for k, v in log.items() if k.endswith(("_instruction", "_demos", "score"))
            }
            for n, log in compiled.trial_logs.items()
        }
    if kind == "gepa":
        results = compiled.detailed_results
        out["metric_calls_total"] = results.total_metric_calls
        out["candidates"] = len(results.candidates)
        out["scores"] = results.val_aggregate_scores
        out["parents"] = results.parents
    if kind == "simba":
        out["scores"] = [c["score"] for c in compiled.candidate_programs]
        out["trials"] = {str(k): v for k, v in compiled.trial_logs.items()}
    out["metric_calls"] = _calls
    Path(CONFIG["out"]).write_text(json.dumps(out, default=repr))


if __name__ == "__main__":
    main()
