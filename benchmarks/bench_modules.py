"""Module library overhead: a 4-step ReAct episode and Parallel over 20 Predicts
(``--react-v2``: a 4-step ReActV2 episode, native tool calls and text mode).

Both sides answer from an in-process LM that returns fixed completion texts (no HTTP, no
rendering), so what is timed is framework overhead: formatting the prompts, the trajectory,
parsing, tool calls, the fan-out machinery. Alternating rounds, p50 per call. Parallel is also
run against an LMServer in its own process (real HTTP, no added latency).
"""

from __future__ import annotations

import itertools
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from _common import per_call, start_lmserver, write

STEP = (
    "[[ ## next_thought ## ]]\nthought {i}\n\n[[ ## next_tool_name ## ]]\n{tool}\n\n"
    "[[ ## next_tool_args ## ]]\n{args}\n\n[[ ## completed ## ]]"
)
EPISODE = [
    STEP.format(i=0, tool="search", args='{"query": "a"}'),
    STEP.format(i=1, tool="search", args='{"query": "b"}'),
    STEP.format(i=2, tool="search", args='{"query": "c"}'),
    STEP.format(i=3, tool="finish", args="{}"),
    "[[ ## reasoning ## ]]\nall found\n\n[[ ## answer ## ]]\nfinal\n\n[[ ## completed ## ]]",
]
ANSWER = "[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]"


def search(query: str) -> str:
    """Search for a query."""
    return f"results for {query}"


def interleaved(
    ours: Callable[[], object], theirs: Callable[[], object], n: int
) -> tuple[float, float]:
    a: list[float] = []
    b: list[float] = []
    per_call(ours, 0, warmup=5)
    per_call(theirs, 0, warmup=5)
    for _ in range(10):
        a += per_call(ours, n // 10, warmup=0)
        b += per_call(theirs, n // 10, warmup=0)
    return statistics.median(a), statistics.median(b)


def alternating(
    ours: Callable[[], object], theirs: Callable[[], object], n: int
) -> tuple[float, float, float, float]:
    """p50 wall and p50 process-CPU (every thread) seconds per call, ours and theirs,
    alternating single calls (the order flips each round) so load bursts hit both alike:
    ``(ours_wall, theirs_wall, ours_cpu, theirs_cpu)``."""
    samples: dict[int, tuple[list[float], list[float]]] = {0: ([], []), 1: ([], [])}
    per_call(ours, 0, warmup=5)
    per_call(theirs, 0, warmup=5)
    for i in range(n):
        order = ((0, ours), (1, theirs)) if i % 2 == 0 else ((1, theirs), (0, ours))
        for side, fn in order:
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            samples[side][1].append(time.process_time() - cpu)
            samples[side][0].append(time.perf_counter() - wall)
    med = statistics.median
    return med(samples[0][0]), med(samples[1][0]), med(samples[0][1]), med(samples[1][1])


def main() -> None:
    import dspy
    from dspy.utils.dummies import DummyLM as DspyDummyLM

    import dspex
    from dspex.modules.parallel import Parallel
    from dspex.modules.react import ReAct
    from dspex.testing import DummyLM

    def cycling(texts: list[str]) -> tuple[Any, Any]:
        ours_it, theirs_it = itertools.cycle(texts), itertools.cycle(texts)

        class FixedDspyLM(DspyDummyLM):  # type: ignore[misc]
            def _format_answer_fields(self, field_names_and_values: object) -> str:
                return next(theirs_it)

        return DummyLM(lambda messages: next(ours_it)), FixedDspyLM([])

    rows: list[tuple[str, float, float]] = []

    # ReAct: 4 tool steps (3 searches + finish) and the extract step = 5 LM calls per episode
    ours_lm, theirs_lm = cycling(EPISODE)
    agent, dagent = (
        ReAct("question -> answer", tools=[search]),
        dspy.ReAct("question -> answer", tools=[search]),
    )
    with dspex.context(lm=ours_lm), dspy.context(lm=theirs_lm):
        a, b = agent(question="q"), dagent(question="q")
        assert a.answer == b.answer == "final" and len(a.trajectory) == len(b.trajectory) == 16
        rows.append(
            ("ReAct episode: 4 tool steps + extract (5 LM calls), sync", *interleaved(
                lambda: agent(question="q"), lambda: dagent(question="q"), 300
            ))
        )  # fmt: skip

    # Parallel over 20 Predicts, in-process LM
    ours_lm, theirs_lm = cycling([ANSWER])
    pairs = [(dspex.Predict("question -> answer"), {"question": f"q{i}"}) for i in range(20)]
    dpairs = [(dspy.Predict("question -> answer"), {"question": f"q{i}"}) for i in range(20)]
    par = Parallel(num_threads=8, disable_progress_bar=True)
    dpar = dspy.Parallel(num_threads=8, disable_progress_bar=True)
    cpu_rows: list[tuple[str, float, float]] = []
    with dspex.context(lm=ours_lm), dspy.context(lm=theirs_lm):
        assert [p.answer for p in par(pairs)] == [p.answer for p in dpar(dpairs)] == ["Paris"] * 20
        wall_o, wall_t, cpu_o, cpu_t = alternating(lambda: par(pairs), lambda: dpar(dpairs), 200)
        rows.append(("Parallel: 20 Predicts, 8 in flight, in-process LM", wall_o, wall_t))
        cpu_rows.append(("Parallel, in-process LM: process CPU per call", cpu_o, cpu_t))

    # Parallel over 20 Predicts against a real HTTP server
    proc, url = start_lmserver()
    try:
        lm = dspex.LM("openai/test", api_base=url, api_key="k", cache=False, num_retries=0)
        dlm = dspy.LM("openai/test", api_base=url, api_key="k", cache=False, num_retries=0)
        with dspex.context(lm=lm), dspy.context(lm=dlm):
            wall_o, wall_t, cpu_o, cpu_t = alternating(lambda: par(pairs), lambda: dpar(dpairs), 60)
            rows.append(("Parallel: 20 Predicts, 8 in flight, LMServer over HTTP", wall_o, wall_t))
            cpu_rows.append(("Parallel over HTTP: client process CPU per call", cpu_o, cpu_t))
    finally:
        proc.terminate()
        proc.wait()

    def fmt(x: float) -> str:
        return f"{x * 1e3:,.2f} ms"

    targets = {0: 20.0, 1: 10.0, 2: 10.0}  # the targets: ReAct >= 20x, Parallel >= 10x

    def verdict(i: int, ratio: float) -> str:
        return f"≥ {targets[i]:.0f}x: {'met' if ratio >= targets[i] else 'not met'}"

    table = "\n".join(
        f"| {name} | {fmt(o)} | {fmt(t)} | {t / o:.1f}x ({verdict(i, t / o)}) |"
        for i, (name, o, t) in enumerate(rows)
    ) + "".join(f"\n| {name} | {fmt(o)} | {fmt(t)} | {t / o:.1f}x |" for name, o, t in cpu_rows)
    write(
        "modules",
        f"""
## Module library (issue: native Evaluate and module library)

`.venv/bin/python benchmarks/bench_modules.py` — p50 per call, alternating rounds in one
process. In-process rows: both LMs return the same fixed completion texts (no HTTP, no reply
rendering), so only framework overhead differs; tools are the same Python function.
Parallel rows alternate single calls (order flipped each round, 200 in process / 60 over
HTTP each); their CPU rows are `time.process_time` per call (every thread of the process:
DSPy's worker threads included), which machine load inflates far less than wall time.

| workload | DSPex | DSPy 3.4.1 | DSPy / DSPex |
|---|---:|---:|---:|
{table}

Measured {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())} on a shared 2-core machine
(other jobs running): absolute figures are noisy; the ratios are the signal.
""",
    )


V2_TEXT_STEP = (
    "[[ ## next_thought ## ]]\nthought {i}\n\n[[ ## tool_calls ## ]]\n"
    '{{"tool_calls": [{{"name": "{tool}", "args": {args}}}]}}\n\n[[ ## completed ## ]]'
)
V2_TEXT_EPISODE = [
    V2_TEXT_STEP.format(i=0, tool="search", args='{"query": "a"}'),
    V2_TEXT_STEP.format(i=1, tool="search", args='{"query": "b"}'),
    V2_TEXT_STEP.format(i=2, tool="search", args='{"query": "c"}'),
    V2_TEXT_STEP.format(i=3, tool="submit", args='{"answer": "final"}'),
]
V2_CALLS = [("search", '{"query":"a"}'), ("search", '{"query":"b"}'), ("search", '{"query":"c"}')]
V2_CALLS.append(("submit", '{"answer":"final"}'))


def _tool_calling_lm(lib: Any) -> Any:
    """An in-process LM (DSPy's BaseLM contract: ``forward`` returns an OpenAI-shaped response)
    that answers each request of an episode with the next provider tool call, cycling."""
    from dspy.dsp.utils.utils import dotdict as theirs

    from dspex.dsp.utils.utils import dotdict as ours

    dotdict = ours if lib.__name__ == "dspex" else theirs
    steps = itertools.cycle(enumerate(V2_CALLS))

    class ToolCallingLM(lib.BaseLM):  # type: ignore[misc,name-defined]
        @property
        def supports_function_calling(self) -> bool:
            return True

        def forward(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> Any:
            i, (name, arguments) = next(steps)
            call = dotdict(
                id=f"call_{i}", type="function", function=dotdict(name=name, arguments=arguments)
            )
            message = dotdict(content=f"[[ ## next_thought ## ]]\nthought {i}", tool_calls=[call])
            usage = dotdict(prompt_tokens=0, completion_tokens=0, total_tokens=0)
            choice = dotdict(message=message, finish_reason="tool_calls")
            return dotdict(choices=[choice], usage=usage, model="tool-calling-lm")

    return ToolCallingLM("tool-calling-lm", "chat", 0.0, 1000, False)


def react_v2_main() -> None:
    """ReActV2 4-step episodes (3 searches + submit = 4 LM calls), DSPex vs DSPy 3.4.1."""
    import dspy

    import dspex
    from dspex.modules.react_v2 import ReActV2

    rows: list[tuple[str, float, float]] = []
    agent = ReActV2("question -> answer", tools=[search])
    dagent = dspy.ReActV2("question -> answer", tools=[search])

    native = dspex.ChatAdapter(use_native_function_calling=True)
    dnative = dspy.ChatAdapter(use_native_function_calling=True)
    with (
        dspex.context(lm=_tool_calling_lm(dspex), adapter=native),
        dspy.context(lm=_tool_calling_lm(dspy), adapter=dnative),
    ):
        a, b = agent(question="q"), dagent(question="q")
        assert a.answer == b.answer == "final" and a.termination_reason == "submit"
        assert len(a.history.messages) == len(b.history.messages) == 4
        rows.append(
            ("ReActV2 episode: 3 tool turns + submit (4 LM calls), native tool calls, sync",
             *interleaved(lambda: agent(question="q"), lambda: dagent(question="q"), 300))
        )  # fmt: skip

    from dspy.utils.dummies import DummyLM as DspyDummyLM

    from dspex.testing import DummyLM

    ours_it, theirs_it = itertools.cycle(V2_TEXT_EPISODE), itertools.cycle(V2_TEXT_EPISODE)

    class FixedDspyLM(DspyDummyLM):  # type: ignore[misc]
        def _format_answer_fields(self, field_names_and_values: object) -> str:
            return next(theirs_it)

    with (
        dspex.context(lm=DummyLM(lambda messages: next(ours_it)), adapter=dspex.ChatAdapter()),
        dspy.context(lm=FixedDspyLM([]), adapter=dspy.ChatAdapter()),
    ):
        a, b = agent(question="q"), dagent(question="q")
        assert a.answer == b.answer == "final" and len(a.history.messages) == 4
        rows.append(
            ("ReActV2 episode: 3 tool turns + submit (4 LM calls), text tool calls, sync",
             *interleaved(lambda: agent(question="q"), lambda: dagent(question="q"), 300))
        )  # fmt: skip

    table = "\n".join(
        f"| {name} | {o * 1e3:,.2f} ms | {t * 1e3:,.2f} ms | {t / o:.1f}x |" for name, o, t in rows
    )
    write(
        "modules_react_v2",
        f"""
### ReActV2 (stop 19)

`.venv/bin/python benchmarks/bench_modules.py --react-v2` — p50 per episode, alternating rounds
in one process; both sides get the same completions from an in-process LM (provider tool calls
through DSPy's `BaseLM.forward` contract, or fixed ChatAdapter texts), so only framework
overhead differs. One run.

| workload | DSPex | DSPy 3.4.1 | DSPy / DSPex |
|---|---:|---:|---:|
{table}

Measured {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())} on a shared 2-core machine with
other helpers' jobs running: absolute figures are noisy; the ratios are the signal.
""",
    )


if __name__ == "__main__":
    react_v2_main() if "--react-v2" in sys.argv else main()
