"""BootstrapFewShotWithRandomSearch: the same winner, candidates and scores as DSPy 3.4.1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

import dspex
from dspex.errors import OptimizerError
from dspex.teleprompt import BootstrapFewShotWithRandomSearch, BootstrapRS
from dspex.testing import LMServer
from tests.teleprompt import _oracle
from tests.teleprompt._oracle import exact, request_log, serve_oracle, trainset

dspy = pytest.importorskip("dspy")
pytestmark = pytest.mark.dspy

TRAIN = [2, 9, 4, 7, 5, 15, 6, 8, 10, 11, 12, 21]
VAL = [13, 14, 16, 17, 18, 19, 20, 22, 27, 33]


@pytest.fixture(scope="module")
def oracle_server() -> Iterator[LMServer]:
    with LMServer() as srv:
        yield srv


def _summary(program: Any) -> tuple[str, list[tuple[Any, Any, str]]]:
    candidates = [
        (c["seed"], c["score"], json.dumps(c["program"].dump_state(), default=repr))
        for c in program.candidate_programs
    ]
    return json.dumps(program.dump_state(), default=repr), candidates


def _run(server: LMServer, lib: Any, optimizer: Any, **kwargs: Any) -> Any:
    serve_oracle(server)
    lm = lib.LM("openai/test", api_base=server.url, api_key="k", cache=False, num_retries=0)
    with lib.context(lm=lm):
        return optimizer.compile(
            _oracle.two_step(lib),
            trainset=trainset(lib, TRAIN),
            valset=trainset(lib, VAL),
            **kwargs,
        )


ARGS: list[dict[str, Any]] = [
    {"num_candidate_programs": 4, "max_bootstrapped_demos": 3, "max_labeled_demos": 4},
    {"num_candidate_programs": 3, "max_bootstrapped_demos": 2, "max_rounds": 2},
]


@pytest.mark.parametrize("case", range(len(ARGS)))
def test_random_search_same_candidates_and_winner(oracle_server: LMServer, case: int) -> None:
    args = ARGS[case]
    theirs = _run(
        oracle_server,
        dspy,
        dspy.BootstrapFewShotWithRandomSearch(metric=exact, num_threads=4, **args),
    )
    dspy_requests = sorted(map(json.dumps, request_log(oracle_server)))
    ours = _run(
        oracle_server, dspex, BootstrapFewShotWithRandomSearch(metric=exact, num_threads=4, **args)
    )
    assert sorted(map(json.dumps, request_log(oracle_server))) == dspy_requests
    assert _summary(ours) == _summary(theirs)
    assert len(ours.candidate_programs) == args["num_candidate_programs"] + 3


def test_random_search_sequential_same_request_order_and_stop_at_score(
    oracle_server: LMServer,
) -> None:
    args = {"num_candidate_programs": 3, "max_bootstrapped_demos": 2, "max_labeled_demos": 3}
    for extra in ({"num_threads": 1}, {"num_threads": 4, "stop_at_score": 50.0}):
        theirs = _run(
            oracle_server,
            dspy,
            dspy.BootstrapFewShotWithRandomSearch(metric=exact, **args, **extra),
        )
        dspy_requests = request_log(oracle_server)
        ours = _run(oracle_server, dspex, BootstrapRS(metric=exact, **args, **extra))
        if extra["num_threads"] == 1:
            assert request_log(oracle_server) == dspy_requests
        else:
            key = json.dumps
            assert sorted(map(key, request_log(oracle_server))) == sorted(map(key, dspy_requests))
        assert _summary(ours) == _summary(theirs)


def test_random_search_restrict(oracle_server: LMServer) -> None:
    args = {"num_candidate_programs": 5, "max_bootstrapped_demos": 2, "num_threads": 4}
    theirs = _run(
        oracle_server,
        dspy,
        dspy.BootstrapFewShotWithRandomSearch(metric=exact, **args),
        restrict=[-2, 1, 3],
    )
    ours = _run(
        oracle_server,
        dspex,
        BootstrapFewShotWithRandomSearch(metric=exact, **args),
        restrict=[-2, 1, 3],
    )
    assert _summary(ours) == _summary(theirs)
    assert [c["seed"] for c in ours.candidate_programs] != []
    with pytest.raises(OptimizerError, match="restrict"):
        _run(
            oracle_server,
            dspex,
            BootstrapFewShotWithRandomSearch(metric=exact, **args),
            restrict=[99],
        )
