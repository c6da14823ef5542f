"""``make demo``, part 2: an ordinary DSPy program run natively, side by side with DSPy 3.4.1.

The program is written once, the way DSPy's tutorials write programs: a ``Module`` subclass
with two predictors and a pydantic output type. :func:`build` takes the library as an argument,
so the very same source runs under ``import dspy`` and under ``import dspex as dspy``. The demo
then does what users do with a program, with each library, against one LM server:

1. ``Evaluate`` it on a devset (16 threads);
2. compile it with ``BootstrapFewShot`` and evaluate the compiled program;
3. save the compiled program to JSON, load that file into **DSPy** and evaluate it there;
4. serve the compiled program over HTTP (``dspex.server.create_app``) and call it.

The table reports wall time for each library and the ratio. Against the scripted local server
the "model" is a stand-in: it classifies an ambiguous ticket correctly only when the prompt
carries demos, which is what makes few-shot compilation visibly pay off. With ``--lm`` (a real
model) the side-by-side run is skipped, so the provider is paid once.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import pydantic

__all__ = ["TICKETS", "Triage", "build", "run"]

#: (ticket, category, ambiguous): an ambiguous ticket names no obvious keyword.
TICKETS: list[tuple[str, str, bool]] = [
    ("I was charged twice for my March invoice.", "billing", False),
    ("The app crashes when I open the settings page.", "bug", False),
    ("I cannot reset my password, the email never arrives.", "account", False),
    ("Why does my statement show a fee I don't recognise?", "billing", True),
    ("Export to CSV produces an empty file.", "bug", False),
    ("Please change the email address on my profile.", "account", False),
    ("My card was declined but the money left my bank.", "billing", True),
    ("Search returns results from other customers' projects.", "bug", True),
    ("Two-factor codes stopped working after I changed phones.", "account", True),
    ("Refund for the duplicate order, please.", "billing", False),
    ("Error 500 whenever I upload a PNG.", "bug", False),
    ("How do I delete my account and all my data?", "account", False),
]


class Triage(pydantic.BaseModel):
    category: Literal["billing", "bug", "account"]
    urgent: bool


def build(d: ModuleType) -> Any:
    """The support program, for either library (``d`` is ``dspy`` or ``dspex``)."""

    class Classify(d.Signature):  # type: ignore[name-defined,misc]
        """Classify a customer support ticket."""

        ticket: str = d.InputField()
        triage: Triage = d.OutputField()

    class Draft(d.Signature):  # type: ignore[name-defined,misc]
        """Draft a short, friendly reply to the customer."""

        ticket: str = d.InputField()
        category: str = d.InputField()
        reply: str = d.OutputField()

    class Support(d.Module):  # type: ignore[name-defined,misc]
        def __init__(self) -> None:
            super().__init__()
            self.classify = d.ChainOfThought(Classify)
            self.draft = d.Predict(Draft)

        def forward(self, ticket: str) -> Any:
            triage = self.classify(ticket=ticket).triage
            reply = self.draft(ticket=ticket, category=triage.category).reply
            return d.Prediction(category=triage.category, urgent=triage.urgent, reply=reply)

    return Support()


def metric(example: Any, prediction: Any, trace: Any = None) -> bool:
    return bool(example.category == prediction.category)


def script(server: Any) -> None:
    """Teach the scripted server the stand-in model: right on ambiguous tickets only with demos."""
    for ticket, category, ambiguous in TICKETS:
        right = {
            "reasoning": f"The ticket is about {category}.",
            "triage": {"category": category, "urgent": "charged" in ticket or "500" in ticket},
        }
        wrong = {
            "reasoning": "Probably an account question.",
            "triage": {"category": "account", "urgent": False},
        }

        def with_demos(request: Any, ticket: str = ticket) -> bool:
            return _is_classify(request, ticket) and len(request.messages) > 2

        def plain(request: Any, ticket: str = ticket) -> bool:
            return _is_classify(request, ticket)

        server.add_rule(with_demos, right)
        server.add_rule(plain, wrong if ambiguous else right)


def _is_classify(request: Any, ticket: str) -> bool:
    system = str(request.messages[0].get("content", ""))
    return "Classify a customer support ticket" in system and ticket in request.last_user_message


def _examples(d: ModuleType, repeat: int) -> list[Any]:
    return [
        d.Example(ticket=f"{ticket} (#{i})" if i else ticket, category=category).with_inputs(
            "ticket"
        )
        for i in range(repeat)
        for ticket, category, _ in TICKETS
    ]


def _session(d: ModuleType, lm: Any) -> dict[str, Any]:
    """Evaluate, compile and re-evaluate with library ``d``; wall time for each."""
    d.configure(lm=lm)
    devset = _examples(d, 4)
    train = _examples(d, 1)
    evaluate = d.Evaluate(devset=devset, metric=metric, num_threads=16, display_progress=False)
    out: dict[str, Any] = {}
    start = time.perf_counter()
    out["baseline"] = float(evaluate(build(d)).score)
    out["t_baseline"] = time.perf_counter() - start
    start = time.perf_counter()
    compiled = d.BootstrapFewShot(metric=metric, max_bootstrapped_demos=3).compile(
        build(d), trainset=train
    )
    out["t_compile"] = time.perf_counter() - start
    start = time.perf_counter()
    out["compiled"] = float(evaluate(compiled).score)
    out["t_compiled"] = time.perf_counter() - start
    out["program"] = compiled
    return out


def run(console: Any, lm: Any = None) -> None:
    """Run the program-layer demo and print the comparison.

    ``lm`` is a real ``dspex.LM`` (then only dspex runs) or ``None``: a scripted local server
    with 20 ms latency answers both libraries.
    """
    import dspex

    with contextlib.ExitStack() as stack:
        if lm is None:
            from dspex.testing import LMServer

            server = stack.enter_context(LMServer(latency=0.02))
            script(server)
            ours = _session(dspex, _lm(dspex, server.url))
            import dspy

            logging.getLogger("dspy").setLevel(logging.ERROR)
            with contextlib.redirect_stderr(io.StringIO()):  # DSPy's tqdm bars
                theirs = _session(dspy, _lm(dspy, server.url))
            _report(console, ours, theirs, dspy)
        else:
            ours = _session(dspex, lm)
            _report(console, ours, None, None)
        asyncio.run(_serve(console, ours["program"]))


def _lm(d: ModuleType, url: str) -> Any:
    return d.LM("openai/support-demo", api_base=url, api_key="demo", cache=False)


def _report(
    console: Any, ours: dict[str, Any], theirs: dict[str, Any] | None, dspy: ModuleType | None
) -> None:
    from rich.table import Table

    table = Table(title="support program, same LM server (20 ms): dspex native vs DSPy 3.4.1")
    for column in ("step", "dspex", "DSPy", "speed-up", "score"):
        table.add_column(column, justify="left" if column == "step" else "right")
    for label, key, score in (
        ("Evaluate (48 ex.)", "t_baseline", "baseline"),
        ("BootstrapFewShot", "t_compile", None),
        ("Evaluate compiled", "t_compiled", "compiled"),
    ):
        mine = f"{ours[key] * 1e3:.0f} ms"
        if theirs is None:
            row = [mine, "skipped", "", ""]
        else:
            row = [mine, f"{theirs[key] * 1e3:.0f} ms", f"{theirs[key] / ours[key]:.1f}x", ""]
        if score is not None:
            row[3] = f"{ours[score]:.1f}" + ("" if theirs is None else f" / {theirs[score]:.1f}")
        table.add_row(label, *row)
    console.print(table)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "support.json"
        ours["program"].save(str(path))
        console.print(
            f"saved the compiled program: {path.name} ({path.stat().st_size} bytes, DSPy's JSON format)"
        )
        if dspy is not None:
            loaded = build(dspy)
            loaded.load(str(path))
            score = dspy.Evaluate(
                devset=_examples(dspy, 4), metric=metric, num_threads=16, display_progress=False
            )(loaded).score
            console.print(
                f"DSPy 3.4.1 loaded that file and scored it {float(score):.1f} on the same devset"
            )


async def _serve(console: Any, program: Any) -> None:
    import httpx

    from dspex.server import create_app

    app = create_app({"support": program}, max_concurrency=8)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://dspex") as client:
        ticket = TICKETS[3][0]
        response = await client.post(
            "/v1/programs/support/call", json={"inputs": {"ticket": ticket}}
        )
        response.raise_for_status()
        outputs = response.json()["outputs"]
    console.print(
        f"served over HTTP: POST /v1/programs/support/call {{ticket: {ticket!r}}} -> "
        f"category={outputs['category']!r}, urgent={outputs['urgent']}",
        markup=False,
    )
