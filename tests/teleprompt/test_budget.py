"""``max_lm_calls``: optimizers stop starting work once the budget is spent and return the
best program so far — the program DSPy compiles when it is given exactly that work."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

import dspex
from dspex.errors import OptimizerError
from dspex.teleprompt import BootstrapFewShot, BootstrapFewShotWithRandomSearch
from dspex.testing import LMServer
from tests.teleprompt import _oracle
from tests.teleprompt._oracle import exact, serve_oracle, trainset

dspy = pytest.importorskip("dspy")
pytestmark = pytest.mark.dspy

NUMBERS = [2, 9, 4, 7, 5, 15, 6, 8, 10, 11]


@pytest.fixture(scope="module")
def oracle_server() -> Iterator[LMServer]:
    with LMServer() as srv:
        yield srv


def _compile(server: LMServer, lib: Any, optimizer: Any, **kwargs: Any) -> Any:
    serve_oracle(server)
    lm = lib.LM("openai/test", api_base=server.url, api_key="k", cache=False, num_retries=0)
    with lib.context(lm=lm):
        return optimizer.compile(_oracle.two_step(lib), trainset=trainset(lib, NUMBERS), **kwargs)


def _state(program: Any) -> str:
    return json.dumps(program.dump_state(), default=repr)


def test_bootstrap_stops_at_the_budget_with_the_demos_found(oracle_server: LMServer) -> None:
    # Two calls per example: 4 calls run examples 2 (passes) and 9 (fails at round 0).
    ours = BootstrapFewShot(metric=exact, num_threads=1, max_lm_calls=4)
    compiled = _compile(oracle_server, dspex, ours)
    assert len(oracle_server.requests) == 4
    assert ours.budget.calls == {"bootstrap": 4}
    # DSPy stops at the same place when only one bootstrapped demo is wanted.
    theirs = _compile(
        oracle_server, dspy, dspy.BootstrapFewShot(metric=exact, max_bootstrapped_demos=1)
    )
    assert _state(compiled) == _state(theirs)


def test_bootstrap_concurrent_overshoot_is_bounded_by_calls_in_flight(
    oracle_server: LMServer,
) -> None:
    ours = BootstrapFewShot(metric=exact, num_threads=3, max_lm_calls=2)
    _compile(oracle_server, dspex, ours)
    # Three examples start at once (2 calls each); none starts after the budget is spent.
    assert 2 <= ours.budget.total <= 6 == len(oracle_server.requests)


def test_random_search_returns_best_so_far_when_spent(oracle_server: LMServer) -> None:
    ours = BootstrapFewShotWithRandomSearch(
        metric=exact, num_candidate_programs=4, num_threads=4, max_lm_calls=1
    )
    compiled = _compile(oracle_server, dspex, ours, valset=trainset(dspex, NUMBERS))
    assert [c["seed"] for c in compiled.candidate_programs] == [-3]
    assert ours.budget.calls == {"candidate -3": 2 * len(NUMBERS)}
    theirs = _compile(
        oracle_server,
        dspy,
        dspy.BootstrapFewShotWithRandomSearch(
            metric=exact, num_candidate_programs=4, num_threads=4
        ),
        valset=trainset(dspy, NUMBERS),
        restrict=[-3],
    )
    assert _state(compiled) == _state(theirs)
    assert compiled.candidate_programs[0]["score"] == theirs.candidate_programs[0]["score"]


def test_bad_budget_is_a_typed_error() -> None:
    with pytest.raises(OptimizerError, match="max_lm_calls"):
        BootstrapFewShot(max_lm_calls=0)
    with pytest.raises(OptimizerError, match="max_lm_calls"):
        BootstrapFewShotWithRandomSearch(metric=exact, max_lm_calls=-1)


def test_budget_alone_skips_the_hooks_of_calls_that_are_not_lm_calls(
    oracle_server: LMServer,
) -> None:
    """A call budget implements only the LM hooks: while it is the only callback, a module's
    call opens no callback call (no call id), its LM calls are still counted; with another
    callback installed, the module hooks fire as before."""
    from dspex.teleprompt.budget import CallBudget, counting
    from dspex.utils.callback import ACTIVE_CALL_ID, BaseCallback

    seen: list[Any] = []

    class Probe(dspex.Module):
        def forward(self, question: str) -> Any:
            seen.append(ACTIVE_CALL_ID.get())
            return self.predict(question=question)

        def __init__(self) -> None:
            super().__init__()
            self.predict = dspex.Predict("question -> answer")

    class Modules(BaseCallback):
        def __init__(self) -> None:
            self.starts: list[str] = []

        def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
            self.starts.append(call_id)

    serve_oracle(oracle_server)
    lm = dspex.LM("openai/test", api_base=oracle_server.url, api_key="k", cache=False)
    budget = CallBudget()
    with dspex.context(lm=lm), counting(budget):
        Probe()(question="Is 2 even or odd?")
    assert seen == [None] and budget.total == 1
    modules = Modules()
    with dspex.context(lm=lm, callbacks=[modules]), counting(budget):
        Probe()(question="Is 3 even or odd?")
    assert seen[1] is not None and seen[1] == modules.starts[0] and budget.total == 2
