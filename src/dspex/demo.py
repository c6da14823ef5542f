"""``make demo``: run a DSPex program end to end and show what ran where, and how fast.

With no LM configured (no ``--lm`` and no ``DSPEX_LM``), the demo starts DSPex's scripted
local LM server (``dspex.testing.LMServer``) on 127.0.0.1 and says so: answers then come
from that server, not from a real model. ``--lm openai/gpt-4o-mini`` (with the provider's
API key in the environment) uses a real model.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack

__all__ = ["main"]


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dspex demo", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--lm", default=os.environ.get("DSPEX_LM"), help="model id, e.g. openai/gpt-4o-mini"
    )
    parser.add_argument("--api-base", default=os.environ.get("DSPEX_API_BASE"))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    from rich.console import Console
    from rich.table import Table

    import dspex

    console = Console()
    with ExitStack() as stack:
        if args.lm:
            lm = dspex.LM(args.lm, api_base=args.api_base)
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

        class QA(dspex.Signature):
            """Answer the question with a short factual answer."""

            question: str = dspex.InputField(desc="a trivia question")
            answer: str = dspex.OutputField(desc="a few words")
            confidence: float = dspex.OutputField(desc="between 0 and 1")

        qa = dspex.ChainOfThought(QA)
        questions = [
            "What is the capital of France?",
            "Who wrote The Old Man and the Sea?",
            "How many legs does a spider have?",
        ]
        table = Table(title=f"native ChainOfThought ({qa.implementation})")
        for column in ("question", "reasoning", "answer", "confidence", "ms"):
            table.add_column(column)
        for question in questions:
            start = time.perf_counter()
            pred = qa(question=question)
            elapsed = (time.perf_counter() - start) * 1000
            table.add_row(
                question,
                str(pred.reasoning)[:60],
                str(pred.answer),
                f"{pred.confidence:.2f}",
                f"{elapsed:.2f}",
            )
        console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
