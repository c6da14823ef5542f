"""``make demo``: a research-assistant pipeline mixing native and DSPy steps, timed per step.

The pipeline (as in the seeds): a native validation step and a native template, a real DSPy
``ChainOfThought`` in a worker-pool process, a parallel fan-out mixing native and DSPy steps,
a native map over the search queries, and native formatting. The table shows where each step
ran and how long it took.

With no LM configured (no ``--lm`` and no ``DSPEX_LM``), the demo starts DSPex's scripted
local LM server (``dspex.testing.LMServer``) on 127.0.0.1 and says so: answers then come
from that server, not from a real model. ``--lm openai/gpt-4o-mini`` (with the provider's
API key in the environment) uses a real model.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

__all__ = ["main"]


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dspex demo", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--lm", default=os.environ.get("DSPEX_LM"), help="model id, e.g. openai/gpt-4o-mini"
    )
    parser.add_argument("--api-base", default=os.environ.get("DSPEX_API_BASE"))
    parser.add_argument(
        "--api-key",
        default=os.environ.get("DSPEX_API_KEY"),
        help="the provider's API key (default: the provider's usual environment variable)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    from rich.console import Console

    import dspex

    console = Console()
    with ExitStack() as stack:
        if args.lm:
            lm = dspex.LM(args.lm, api_base=args.api_base, api_key=args.api_key)
            console.print(f"[bold]LM:[/] {args.lm}")
        else:
            from dspex.testing import LMServer

            server = stack.enter_context(LMServer())
            lm = dspex.LM("openai/dspex-demo", api_base=server.url, api_key="demo", cache=False)
            console.print(
                "[bold yellow]No LM configured[/] (set DSPEX_LM or pass --lm): using DSPex's "
                f"scripted local LM server at {server.url}. Its answers are synthetic."
            )
        dspex.configure(lm=lm)

        from dspex.pool import shutdown_pools

        stack.callback(shutdown_pools)  # before the LM server stops
        _research_assistant(console)
        console.rule("an ordinary DSPy program, run natively")
        from dspex.demo_program import run

        run(console, lm if args.lm else None)
    return 0


def _research_assistant(console: Any) -> None:
    import dspex
    from dspex import pipeline as pl

    pipe = pl(
        [
            pl.validate("question: str -> ", name="check_input"),
            pl.template(
                "Research question: {{ question }}\nAnswer for a curious reader.",
                output="brief",
                name="brief",
            ),
            # real DSPy 3.4.1 in a worker process
            (
                "dspy",
                "dspy.ChainOfThought",
                {"signature": "brief -> search_queries: list[str]", "name": "plan"},
            ),
            pl.validate("search_queries: list[str] -> ", name="check_plan"),
            pl.parallel(
                [
                    ("native", dspex.ChainOfThought, {"signature": "brief -> draft"}),
                    ("dspy", "dspy.Predict", {"signature": "brief -> counterpoint"}),
                    pl.step(_keywords, name="keywords"),
                ],
                name="fan_out",
            ),
            pl.map(
                ("native", dspex.Predict, {"signature": "query -> finding"}),
                over="search_queries",
                as_="query",
                concurrency=4,
                name="search",
            ),
            pl.template(
                "# {{ question }}\n\n{{ draft }}\n\nCounterpoint: {{ counterpoint }}\n"
                "Keywords: {{ keywords | join(', ') }}\n"
                "{% for i in range(search_queries | length) %}"
                "- {{ search_queries[i] }}: {{ finding[i] }}\n{% endfor %}",
                output="report",
                name="format",
            ),
        ],
        name="research_assistant",
        step_timeout=60,
    )
    console.print(repr(pipe), markup=False)
    pipe.run(question="warm up the DSPy worker pool")  # first run starts the pool
    result = pipe.run(question="Why is the sky blue?")
    console.print(result.table(title=f"research assistant: {result.duration * 1e3:.1f} ms"))
    console.print(result["report"], markup=False)


def _keywords(brief: str) -> dict[str, Any]:
    words = [w.strip(".,:?").lower() for w in brief.split()]
    return {"keywords": sorted({w for w in words if len(w) > 5})[:5]}


if __name__ == "__main__":
    sys.exit(main())
