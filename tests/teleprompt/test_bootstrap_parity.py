"""BootstrapFewShot: identical compiled state to DSPy 3.4.1 in process.

Both run against one ``LMServer`` answering by rule (:mod:`tests.teleprompt._oracle`): some
examples pass, some fail, some pass only on a later round. The compiled programs' state
(demos in order, instructions) must be equal, and with ``num_threads=1`` the LM requests
must come in DSPy's order.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

import dspex
from dspex.errors import OptimizerError
from dspex.teleprompt import BootstrapFewShot
from dspex.testing import Fault, LMServer
from tests.teleprompt import _oracle
from tests.teleprompt._oracle import exact, request_log, serve_oracle, trainset

dspy = pytest.importorskip("dspy")
pytestmark = pytest.mark.dspy

NUMBERS = [2, 9, 4, 7, 5, 15, 6, 8, 10, 11, 12, 21, 13, 14, 16, 17, 18, 19, 20, 22]


@pytest.fixture(scope="module")
def oracle_server() -> Iterator[LMServer]:
    with LMServer() as srv:
        yield srv


def _state(program: Any) -> str:
    state = program.dump_state()
    return json.dumps(state, sort_keys=False, default=repr)


def _dspy_compile(server: LMServer, optimizer: Any, program: Any, **kwargs: Any) -> Any:
    serve_oracle(server)
    lm = dspy.LM("openai/test", api_base=server.url, api_key="k", cache=False, num_retries=0)
    with dspy.context(lm=lm):
        return optimizer.compile(program, **kwargs)


def _native_compile(server: LMServer, optimizer: Any, program: Any, **kwargs: Any) -> Any:
    serve_oracle(server)
    lm = dspex.LM("openai/test", api_base=server.url, api_key="k", cache=False, num_retries=0)
    with dspex.context(lm=lm):
        return optimizer.compile(program, **kwargs)


CASES: list[dict[str, Any]] = [
    {"max_bootstrapped_demos": 4, "max_labeled_demos": 16},
    {"max_bootstrapped_demos": 3, "max_labeled_demos": 5, "max_rounds": 2},
    {"max_bootstrapped_demos": 20, "max_labeled_demos": 2, "max_rounds": 3},
    {"max_bootstrapped_demos": 2, "max_labeled_demos": 0},
    {"max_bootstrapped_demos": 4, "max_labeled_demos": 8, "metric_threshold": 1},
]


@pytest.mark.parametrize("program", ["two_step", "repeated"])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_bootstrap_same_state_and_request_order(
    oracle_server: LMServer, program: str, case: int
) -> None:
    args = CASES[case]
    build = getattr(_oracle, program)
    theirs = _dspy_compile(
        oracle_server,
        dspy.BootstrapFewShot(metric=exact, **args),
        build(dspy),
        trainset=trainset(dspy, NUMBERS),
    )
    dspy_requests = request_log(oracle_server)
    ours = _native_compile(
        oracle_server,
        BootstrapFewShot(metric=exact, num_threads=1, **args),
        build(dspex),
        trainset=trainset(dspex, NUMBERS),
    )
    assert request_log(oracle_server) == dspy_requests
    assert ours._compiled is True
    assert _state(ours) == _state(theirs)


def _question(request: tuple[Any, Any]) -> int:
    """The trainset number a logged request is about."""
    return int(_oracle._number(str(request[0][-1]["content"]).split("question ## ]]")[1]))


@pytest.mark.parametrize("case", [0, 1, 2, 3])
def test_bootstrap_concurrent_same_state_same_calls(oracle_server: LMServer, case: int) -> None:
    """Running ahead (8 at once) sends every request DSPy sends, at most 8 more (all about
    examples after DSPy's last), and picks the same demos."""
    args = CASES[case]
    theirs = _dspy_compile(
        oracle_server,
        dspy.BootstrapFewShot(metric=exact, **args),
        _oracle.two_step(dspy),
        trainset=trainset(dspy, NUMBERS),
    )
    dspy_requests = request_log(oracle_server)
    ours = _native_compile(
        oracle_server,
        BootstrapFewShot(metric=exact, num_threads=8, **args),
        _oracle.two_step(dspex),
        trainset=trainset(dspex, NUMBERS),
    )
    key = json.dumps
    extra = Counter(map(key, request_log(oracle_server)))
    extra.subtract(Counter(map(key, dspy_requests)))
    assert all(count >= 0 for count in extra.values()), "a request DSPy sends is missing"
    extras = [json.loads(k) for k, count in extra.items() for _ in range(count)]
    assert len(extras) <= 8
    last = NUMBERS.index(max((_question(r) for r in dspy_requests), key=NUMBERS.index))
    assert all(NUMBERS.index(_question(r)) > last for r in extras)
    assert _state(ours) == _state(theirs)


def test_bootstrap_runs_ahead_only_when_alone(oracle_server: LMServer) -> None:
    """Examples run ahead (fewer round trips); inside another optimizer (random search,
    MIPROv2) or with num_threads=1 the examples run are exactly DSPy's."""
    args = CASES[0]
    _dspy_compile(
        oracle_server,
        dspy.BootstrapFewShot(metric=exact, **args),
        _oracle.two_step(dspy),
        trainset=trainset(dspy, NUMBERS),
    )
    dspy_count = len(oracle_server.requests)
    ahead = BootstrapFewShot(metric=exact, num_threads=8, **args)
    assert ahead._ahead(8, 2) == 4 and ahead._ahead(1, 2) == 0
    nested = BootstrapFewShot(metric=exact, num_threads=8, **args)
    nested._run_ahead = False
    assert nested._ahead(8, 2) == 0
    _native_compile(
        oracle_server, nested, _oracle.two_step(dspex), trainset=trainset(dspex, NUMBERS)
    )
    assert len(oracle_server.requests) == dspy_count
    budgeted = BootstrapFewShot(metric=exact, num_threads=8, max_lm_calls=1000, **args)
    assert budgeted._ahead(8, 2) == 0


def test_bootstrap_stops_examples_run_ahead_and_waits_for_them(oracle_server: LMServer) -> None:
    """An example run ahead whose sync ``forward`` is still in its worker thread when the
    loop stops makes no further module call, and its LM call in flight ends before
    ``compile`` returns: nothing reaches the LM afterwards."""
    serve_oracle(oracle_server)
    oracle_server.fault(
        Fault(
            delay=0.5,
            match=lambda r: "Is 5 even" in r.last_user_message and "hint" in r.last_user_message,
        )
    )
    lm = dspex.LM(
        "openai/test", api_base=oracle_server.url, api_key="k", cache=False, num_retries=0
    )
    optimizer = BootstrapFewShot(metric=exact, num_threads=8, **CASES[1])
    with dspex.context(lm=lm):
        optimizer.compile(_oracle.two_step(dspex), trainset=trainset(dspex, NUMBERS))
    asked = [_question(r) for r in request_log(oracle_server)]
    assert 4 in asked and asked.count(5) == 1  # 5 ran ahead (DSPy stops at 4): no answer call
    time.sleep(1.0)  # past the delayed draft: an abandoned thread would ask 5's answer now
    assert [_question(r) for r in request_log(oracle_server)] == asked


def test_bootstrap_with_teacher_and_no_metric(oracle_server: LMServer) -> None:
    theirs = _dspy_compile(
        oracle_server,
        dspy.BootstrapFewShot(max_bootstrapped_demos=3, max_labeled_demos=4),
        _oracle.two_step(dspy),
        teacher=_oracle.two_step(dspy),
        trainset=trainset(dspy, NUMBERS),
    )
    ours = _native_compile(
        oracle_server,
        BootstrapFewShot(max_bootstrapped_demos=3, max_labeled_demos=4),
        _oracle.two_step(dspex),
        teacher=_oracle.two_step(dspex),
        trainset=trainset(dspex, NUMBERS),
    )
    assert _state(ours) == _state(theirs)


def _flaky(lib: Any) -> Any:
    """Raises for multiples of 7 (an error DSPy counts against ``max_errors``)."""

    class Flaky(lib.Module):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.answer = lib.Predict("question -> answer")

        def forward(self, question: str) -> Any:
            if int(question.split()[1]) % 7 == 0:
                raise RuntimeError(f"flaky on {question}")
            return self.answer(question=question)

    return Flaky()


@pytest.mark.parametrize("num_threads", [1, 8])
def test_bootstrap_errors_counted_in_trainset_order(
    oracle_server: LMServer, num_threads: int
) -> None:
    args = {"max_bootstrapped_demos": 9, "max_labeled_demos": 2, "max_errors": 3}
    theirs = _dspy_compile(
        oracle_server,
        dspy.BootstrapFewShot(metric=exact, **args),
        _flaky(dspy),
        trainset=trainset(dspy, NUMBERS),
    )
    ours = _native_compile(
        oracle_server,
        BootstrapFewShot(metric=exact, num_threads=num_threads, **args),
        _flaky(dspex),
        trainset=trainset(dspex, NUMBERS),
    )
    assert _state(ours) == _state(theirs)
    # Two errors (7 and 21) happen before the quota is filled (14 is never run).
    with pytest.raises(RuntimeError, match="flaky on Is 21"):
        _native_compile(
            oracle_server,
            BootstrapFewShot(metric=exact, num_threads=num_threads, **{**args, "max_errors": 2}),
            _flaky(dspex),
            trainset=trainset(dspex, NUMBERS),
        )
    with pytest.raises(RuntimeError, match="flaky on Is 21"):
        _dspy_compile(
            oracle_server,
            dspy.BootstrapFewShot(metric=exact, **{**args, "max_errors": 2}),
            _flaky(dspy),
            trainset=trainset(dspy, NUMBERS),
        )


def test_bootstrap_rejects_compiled_student_and_mismatched_teacher(lm: dspex.LM) -> None:
    student = _oracle.two_step(dspex)
    student._compiled = True
    with pytest.raises(OptimizerError, match="uncompiled"):
        BootstrapFewShot().compile(student, trainset=trainset(dspex, [1]))
    with pytest.raises(OptimizerError, match="same number of predictors"):
        BootstrapFewShot().compile(
            _oracle.two_step(dspex), teacher=_flaky(dspex), trainset=trainset(dspex, [1])
        )
    with pytest.raises(OptimizerError, match="num_threads"):
        BootstrapFewShot(num_threads=0)


def test_bootstrap_async_compile_matches_sync(oracle_server: LMServer) -> None:
    import asyncio

    serve_oracle(oracle_server)
    lm = dspex.LM("openai/test", api_base=oracle_server.url, api_key="k", cache=False)

    async def run() -> Any:
        with dspex.context(lm=lm):
            return await BootstrapFewShot(metric=exact).acompile(
                _oracle.two_step(dspex), trainset=trainset(dspex, NUMBERS)
            )

    compiled = asyncio.run(run())
    sync = _native_compile(
        oracle_server,
        BootstrapFewShot(metric=exact),
        _oracle.two_step(dspex),
        trainset=trainset(dspex, NUMBERS),
    )
    assert _state(compiled) == _state(sync)
