"""Flex forward cost: native ``dspex.Flex`` against DSPy 3.4.1's ``dspy.Flex``.

Both run the same two-predictor ``module_src`` in the same interpreter (DSPEx's bubblewrap
sandbox, ``dspex.PythonInterpreter``: DSPy has no Deno here and takes any interpreter), with
in-process LMs returning fixed completions, so what differs is the Flex itself: the facade
shim, the host bridge, the predictors it builds and runs. A plain two-``Predict`` program
without a sandbox is the floor. Alternating single calls (order flipped each round), p50 wall.

    .venv/bin/python benchmarks/bench_flex.py [N]
"""

from __future__ import annotations

import itertools
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from _common import per_call, write

SOURCE = """
class TwoStep(dspy.Module):
    def __init__(self):
        super().__init__()
        self.draft = dspy.Predict("question -> draft")
        self.answer = dspy.Predict(dspy.Signature("question, draft -> answer", "Be brief."))

    def forward(self, **inputs):
        d = self.draft(question=inputs["question"])
        return dspy.Prediction(answer=self.answer(question=inputs["question"], draft=d.draft).answer)
""".strip()
REPLIES = [
    "[[ ## draft ## ]]\na draft\n\n[[ ## completed ## ]]",
    "[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]",
]


def alternating(
    ours: Callable[[], object], theirs: Callable[[], object], n: int
) -> tuple[float, float]:
    a: list[float] = []
    b: list[float] = []
    per_call(ours, 0, warmup=3)
    per_call(theirs, 0, warmup=3)
    for i in range(n):
        order = ((a, ours), (b, theirs)) if i % 2 == 0 else ((b, theirs), (a, ours))
        for samples, fn in order:
            start = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - start)
    return statistics.median(a), statistics.median(b)


def main() -> None:
    import warnings

    import dspy
    from dspy.utils.dummies import DummyLM as DspyDummyLM

    import dspex
    from dspex.modules.flex import Flex
    from dspex.primitives.python_interpreter import PythonInterpreter
    from dspex.testing import DummyLM

    warnings.simplefilter("ignore", DeprecationWarning)  # DSPy's SandboxLM message warning
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    ours_it, theirs_it = itertools.cycle(REPLIES), itertools.cycle(REPLIES)

    class FixedDspyLM(DspyDummyLM):  # type: ignore[misc]
        def _format_answer_fields(self, field_names_and_values: object) -> str:
            return next(theirs_it)

    ours_lm: Any = DummyLM(lambda messages: next(ours_it))
    theirs_lm: Any = FixedDspyLM([])
    flex = Flex("question -> answer", interpreter_factory=PythonInterpreter)
    dflex = dspy.Flex("question -> answer", interpreter_factory=PythonInterpreter)
    flex._bind_code(SOURCE)
    dflex._bind_code(SOURCE)

    class Plain(dspex.Module):
        def __init__(self) -> None:
            super().__init__()
            self.draft = dspex.Predict("question -> draft")
            self.answer = dspex.Predict("question, draft -> answer")

        def forward(self, question: str) -> Any:
            d = self.draft(question=question)
            return self.answer(question=question, draft=d.draft)

    plain = Plain()
    rows: list[tuple[str, float, float]] = []
    with dspex.context(lm=ours_lm), dspy.context(lm=theirs_lm):
        assert flex(question="q").answer == dflex(question="q").answer == "Paris"
        rows.append(
            ("Flex forward: 2 bridged Predicts, fresh sandbox per call", *alternating(
                lambda: flex(question="q"), lambda: dflex(question="q"), n
            ))
        )  # fmt: skip
        floor = statistics.median(per_call(lambda: plain(question="q"), 200, warmup=20))

    lines = [
        "| case | DSPEx p50 | DSPy p50 | DSPy/DSPEx |",
        "| --- | --- | --- | --- |",
        *(f"| {name} | {o * 1e3:,.1f} ms | {t * 1e3:,.1f} ms | {t / o:.2f}x |" for name, o, t in rows),
        f"| floor: the same two native Predicts, no sandbox | {floor * 1e3:,.2f} ms | | |",
    ]  # fmt: skip
    text = "\n".join(lines)
    write("flex", text)


if __name__ == "__main__":
    main()
