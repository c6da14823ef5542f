"""Native ``CodeAct`` against DSPy 3.4.1's on the same LM replies: the same request bytes at
every step and the same prediction (trajectory included).

Both sides execute the generated code for real in DSPEx's sandbox: ours through its default
``PythonInterpreter``, DSPy's through ``dspex.sandbox.dspy_compat`` (DSPy's default
interpreter needs Deno, which this machine does not have). The tool below is defined in the
interpreter from its source, as DSPy does, so the code calls it inside the sandbox.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import dspex
from dspex.modules.code_act import CodeAct
from dspex.sandbox import bwrap_executable
from dspex.testing import Fault, LMServer

dspy = pytest.importorskip("dspy")
pytestmark = [
    pytest.mark.filterwarnings("ignore:CodeAct is deprecated:DeprecationWarning"),
    pytest.mark.skipif(bwrap_executable() is None, reason="the sandbox needs bubblewrap"),
]

SIGNATURE = "question -> answer"


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def scale(value: float, factor: float = 2.0) -> float:
    """Multiply a value by a factor."""
    return value * factor


def _code(body: str) -> str:
    return f"```python\n{body}\n```"


# two code steps (the first calls a tool from code), a code error, its fix, then finished
FULL_RUN = [
    {"generated_code": _code("x = add(2, 3)\nprint(x)"), "finished": False},
    {"generated_code": _code("y = x / 0"), "finished": False},
    {"generated_code": _code("y = scale(x)\nprint(y)"), "finished": True},
    {"reasoning": "x is 5, doubled is 10", "answer": "10"},
]


def _run(
    server: LMServer,
    lib: Any,
    replies: list[Any],
    *,
    use_async: bool = False,
    max_iters: int = 5,
    signature: str = SIGNATURE,
    call_kw: dict[str, Any] | None = None,
    adapter: str | None = None,
    faults: list[Fault] | None = None,
) -> tuple[list[Any], Any]:
    from dspex.sandbox.dspy_compat import sandbox_interpreter_factory

    server.clear()
    server.reply(*replies)
    for fault in faults or []:
        server.fault(fault)
    lm = lib.LM("openai/test", api_base=server.url, api_key="k", cache=False, num_retries=0)
    if lib is dspex:
        act = CodeAct(signature, tools=[add, scale], max_iters=max_iters)
    else:
        act = dspy.CodeAct(
            signature,
            tools=[add, scale],
            max_iters=max_iters,
            interpreter_factory=sandbox_interpreter_factory(timeout=30),
        )
    kwargs = {"question": "What is (2 + 3) * 2?", **(call_kw or {})}
    error: BaseException | None = None
    pred = None
    settings: dict[str, Any] = {"lm": lm}
    if adapter is not None:
        settings["adapter"] = getattr(lib, adapter)()
    with lib.context(**settings):
        try:
            pred = asyncio.run(act.acall(**kwargs)) if use_async else act(**kwargs)
        except Exception as exc:
            error = exc
    requests = [r.json["messages"] for r in server.requests]
    return requests, pred if error is None else error


def _compare(server: LMServer, replies: list[Any], **kw: Any) -> tuple[list[Any], Any]:
    use_async = kw.pop("use_async", False)
    ours, pred = _run(server, dspex, replies, use_async=use_async, **kw)
    theirs, dpred = _run(server, dspy, replies, **kw)  # DSPy's CodeAct has no working async path
    assert len(ours) == len(theirs)
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert a == b, f"request {i} differs"
    if isinstance(pred, BaseException):
        assert type(pred).__name__ == type(dpred).__name__ and str(pred) == str(dpred)
    else:
        assert dict(pred.items()) == dict(dpred.items())
    return ours, pred


@pytest.mark.parametrize(
    ("use_async", "adapter"), [(False, None), (True, None), (False, "JSONAdapter")]
)
def test_code_steps_tool_call_error_retry_and_finish_match_dspy(
    server: LMServer, use_async: bool, adapter: str | None
) -> None:
    requests, pred = _compare(server, FULL_RUN, use_async=use_async, adapter=adapter)
    assert len(requests) == 4 and pred.answer == "10"
    assert pred.trajectory == {
        "generated_code_0": "x = add(2, 3)\nprint(x)",
        "code_output_0": '"5\\n"',
        "generated_code_1": "y = x / 0\ny",  # the last assignment's name is appended
        "observation_1": "Failed to execute the generated code: ZeroDivisionError: division by zero",
        "generated_code_2": "y = scale(x)\nprint(y)",
        "code_output_2": '"10.0\\n"',
    }
    if adapter is not None:
        return
    system = requests[0][0]["content"]
    assert "(1) add, whose description is <desc>Add two integers.</desc>" in system
    assert "ZeroDivisionError: division by zero" in str(requests[2])


def test_unparsable_code_and_max_iters_match_dspy(server: LMServer) -> None:
    replies = [
        {"generated_code": "", "finished": False},  # "Failed to parse the generated code"
        {"generated_code": "a = 1 = 2", "finished": False},  # one line, two '=': bad format
        {"reasoning": "nothing ran", "answer": "unknown"},
    ]
    requests, pred = _compare(server, replies, max_iters=2)
    assert len(requests) == 3
    assert list(pred.trajectory) == ["observation_0", "observation_1"]
    assert pred.trajectory["observation_0"].startswith("Failed to parse the generated code")


def test_per_call_max_iters_and_last_assignment_value_match_dspy(server: LMServer) -> None:
    replies = [
        {"generated_code": _code("total = add(40, 2)"), "finished": False},
        {"reasoning": "42", "answer": "42"},
    ]
    _, pred = _compare(server, replies, call_kw={"max_iters": 1})
    assert pred.trajectory["code_output_0"] == "42"  # the last assignment's value is shown


def test_state_and_named_predictors_match_dspy() -> None:
    from dspex.sandbox.dspy_compat import sandbox_interpreter_factory

    ours = CodeAct(SIGNATURE, tools=[add, scale])
    theirs = dspy.CodeAct(
        SIGNATURE, tools=[add, scale], interpreter_factory=sandbox_interpreter_factory()
    )
    assert [n for n, _ in ours.named_predictors()] == [n for n, _ in theirs.named_predictors()]
    assert ours.dump_state() == theirs.dump_state()
    assert ours.codeact.signature.instructions == theirs.codeact.signature.instructions
    # DSPy's saved state (with demos) loads into ours and dumps back the same
    theirs.codeact.demos = [dspy.Example(question="q", generated_code="print(1)", finished=True)]
    theirs.extractor.predict.demos = [dspy.Example(question="q", answer="1", reasoning="r")]
    ours.load_state(theirs.dump_state())
    assert ours.dump_state() == theirs.dump_state()
    assert ours.codeact.demos[0]["generated_code"] == "print(1)"  # dicts, as DSPy loads them


CWE_BODY = (
    '{"error": {"message": "This model\'s maximum context length is 8192 tokens", '
    '"code": "context_length_exceeded", "type": "invalid_request_error"}}'
)


def test_extract_context_window_truncates_the_trajectory_as_dspy(server: LMServer) -> None:
    # the first extract request (full trajectory) overflows: the 4 oldest keys are dropped
    def overflow() -> list[Fault]:
        return [
            Fault(
                status=400,
                body=CWE_BODY,
                match=lambda r: (
                    "[[ ## reasoning ## ]]" in str(r.json["messages"][0])
                    and "generated_code_0" in str(r.json["messages"])
                ),
            )
        ]

    ours, pred = _run(server, dspex, FULL_RUN, faults=overflow())
    theirs, dpred = _run(server, dspy, FULL_RUN, faults=overflow())
    assert ours == theirs and len(ours) == 5  # 3 code steps, the overflow, the retry
    assert dict(pred.items()) == dict(dpred.items())
    assert list(pred.trajectory) == ["generated_code_2", "code_output_2"]
