"""A rule-based LM for optimizer parity tests, served by ``LMServer``, and the programs used.

The reply depends only on the request (prompt and temperature), so DSPy and DSPex get the
same answers for the same requests: a question holds a number ``n``; ``answer`` is
``"even"``/``"odd"``, except that odd multiples of 3 are answered ``"wrong"`` at temperature
below 1.0 (they pass only on a later bootstrap round), and multiples of 7 are always wrong.
"""

from __future__ import annotations

import re
from typing import Any

from dspex.testing import LMServer, RecordedRequest
from dspex.testing.answers import read_prompt, render_reply

_FIELD = re.compile(r"\[\[ ## (\w+) ## \]\]\n(.*?)(?=\n\n|\Z)", re.S)


def _number(text: str) -> int:
    found = re.search(r"-?\d+", text)
    return int(found.group(0)) if found else 0


def oracle(request: RecordedRequest) -> str:
    system = str(request.messages[0]["content"])
    user = request.last_user_message
    spec = read_prompt(system, user)
    assert spec is not None, system
    inputs = dict(_FIELD.findall(user))
    n = _number(inputs.get("question", user))
    hot = float((request.json or {}).get("temperature") or 0.0) >= 1.0
    values: dict[str, Any] = {}
    for name in spec.fields:
        if name == "answer":
            if n % 7 == 0 or (n % 2 and n % 3 == 0 and not hot):
                values[name] = "wrong"
            else:
                values[name] = "even" if n % 2 == 0 else "odd"
        elif name == "reasoning":
            values[name] = f"{n} divided by 2 leaves {n % 2}."
        elif name == "draft":
            values[name] = f"draft for {n} ({inputs.get('hint', 'none')})"
        else:
            values[name] = f"{name} {n}"
    return render_reply(spec, values)


def serve_oracle(server: LMServer) -> None:
    server.clear()
    server.add_rule(None, oracle)


def trainset(lib: Any, numbers: list[int]) -> list[Any]:
    return [
        lib.Example(
            question=f"Is {n} even or odd?", answer="even" if n % 2 == 0 else "odd"
        ).with_inputs("question")
        for n in numbers
    ]


def exact(example: Any, prediction: Any, trace: Any = None) -> bool:
    return bool(example.answer == prediction.answer)


def two_step(lib: Any) -> Any:
    """A user-defined two-predictor program (the same code for DSPy and DSPex)."""

    class TwoStep(lib.Module):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.draft = lib.Predict("question, hint -> draft")
            self.answer = lib.ChainOfThought("question, draft -> answer")

        def forward(self, question: str) -> Any:
            draft = self.draft(question=question, hint="parity").draft
            return self.answer(question=question, draft=draft)

    return TwoStep()


def repeated(lib: Any) -> Any:
    """One predictor called twice per example (DSPy draws one of its traces by hash)."""

    class Repeated(lib.Module):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.draft = lib.Predict("question, hint -> draft")
            self.answer = lib.Predict("question, draft -> answer")

        def forward(self, question: str) -> Any:
            first = self.draft(question=question, hint="first").draft
            second = self.draft(question=question, hint=first).draft
            return self.answer(question=question, draft=second)

    return Repeated()


def request_log(server: LMServer) -> list[tuple[Any, Any]]:
    return [(r.json["messages"], r.json.get("temperature")) for r in server.requests]


def instruction_sensitive(request: RecordedRequest) -> str:
    """The oracle, except that a task request's ``answer`` also depends on the instruction
    text (the system message's length), so candidates with different instructions score
    differently (COPRO, GEPA, resumed runs)."""
    system = str(request.messages[0]["content"])
    spec = read_prompt(system, request.last_user_message)
    if spec is None or "answer" not in spec.fields:
        return oracle(request)
    n = _number(request.last_user_message)
    right = "even" if n % 2 == 0 else "odd"
    values = {
        name: (right if (n + len(system)) % 3 else "wrong") if name == "answer" else f"{name} {n}"
        for name in spec.fields
    }
    return render_reply(spec, values)
