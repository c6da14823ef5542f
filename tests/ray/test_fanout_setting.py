"""``settings.fanout_backend``: native Evaluate and ``Module.batch`` fan out when not given
``backend=``, so an optimizer's candidate evaluation runs on a pool without touching its code.

The optimizer test compiles the same BootstrapRS twice against the same rule-based LMServer
(tests/teleprompt/_oracle.py): in process, and with ``fanout_backend="ray"`` on the local
cluster (tests/ray/conftest.py); the compiled state, the candidates and their scores, the LM
requests (byte for byte), the budget's LM calls per phase and the usage must be equal.
"""

from __future__ import annotations

import collections
import json
import os
from typing import Any

import pytest

import dspex
from dspex.errors import ConfigurationError
from dspex.testing import LMServer
from tests.teleprompt import _oracle

pytestmark = pytest.mark.timeout(300)

TRAIN = [2, 9, 4, 7, 5, 15, 6, 8]
VAL = [13, 14, 16, 17, 18, 19, 20, 22]


class WherePredict(dspex.Module):
    """A Predict that also says which process ran it."""

    def __init__(self) -> None:
        super().__init__()
        self.predict = dspex.Predict("question -> answer")

    def forward(self, question: str) -> Any:
        prediction = self.predict(question=question)
        prediction.pid = os.getpid()
        return prediction


def exact(example: Any, prediction: Any, trace: Any = None) -> bool:
    return bool(example.answer == prediction.answer)


@pytest.fixture
def lm(server: LMServer) -> Any:
    _oracle.serve_oracle(server)
    return dspex.LM("openai/test", api_base=server.url, api_key="k", cache=False, num_retries=0)


def bodies(server: LMServer) -> collections.Counter[bytes]:
    return collections.Counter(r.body for r in server.requests)


def test_the_setting_is_validated() -> None:
    with pytest.raises(ConfigurationError, match="fanout_backend"):
        dspex.configure(fanout_backend="spark")
    with (
        pytest.raises(ConfigurationError, match="fanout_backend"),
        dspex.context(fanout_backend="gpu"),
    ):
        pass
    assert dspex.settings.current().fanout_backend is None


def test_evaluate_and_batch_read_the_setting(server: LMServer, lm: Any) -> None:
    dev = _oracle.trainset(dspex, VAL)
    here = os.getpid()
    with dspex.context(lm=lm):
        local = dspex.Evaluate(devset=dev, metric=exact)(WherePredict())
        with dspex.context(fanout_backend="process"):
            fanned = dspex.Evaluate(devset=dev, metric=exact)(WherePredict())
            batched = WherePredict().batch(dev)
            pinned = dspex.Evaluate(devset=dev, metric=exact, backend="local")(WherePredict())
            pinned_batch = WherePredict().batch(dev, backend="local")
    assert {pred.pid for _, pred, _ in local.results} == {here}
    assert here not in {pred.pid for _, pred, _ in fanned.results}
    assert here not in {pred.pid for pred in batched}
    assert {pred.pid for _, pred, _ in pinned.results} == {here}  # an explicit backend wins
    assert {pred.pid for pred in pinned_batch} == {here}
    assert fanned.score == local.score == pinned.score
    assert [p.answer for p in batched] == [p.answer for _, p, _ in local.results]


def _compile(lm: Any, server: LMServer) -> tuple[Any, Any, collections.Counter[bytes]]:
    from dspex.teleprompt import BootstrapRS

    _oracle.serve_oracle(server)
    optimizer = BootstrapRS(
        metric=_oracle.exact,
        num_candidate_programs=2,
        max_bootstrapped_demos=2,
        max_labeled_demos=2,
        num_threads=4,
    )
    with dspex.context(lm=lm, track_usage=True):
        compiled = optimizer.compile(
            _oracle.two_step(dspex),
            trainset=_oracle.trainset(dspex, TRAIN),
            valset=_oracle.trainset(dspex, VAL),
        )
    return optimizer, compiled, bodies(server)


def _state(compiled: Any) -> tuple[str, list[tuple[Any, Any, str]]]:
    candidates = [
        (c["seed"], c["score"], json.dumps(c["program"].dump_state(), default=repr))
        for c in compiled.candidate_programs
    ]
    return json.dumps(compiled.dump_state(), default=repr), candidates


def test_an_optimizer_evaluates_its_candidates_on_ray(
    ray_cluster: Any, server: LMServer, lm: Any
) -> None:
    from dspex.lm.usage import track_usage

    with track_usage() as here_usage:
        here_opt, here, here_requests = _compile(lm, server)
    with track_usage() as ray_usage, dspex.context(fanout_backend="ray"):
        ray_opt, fanned, ray_requests = _compile(lm, server)

    assert _state(fanned) == _state(here)
    assert ray_requests == here_requests  # the same LM requests, byte for byte
    # the budget (a callback holding a lock: it stays in this process) saw every LM call the
    # Ray workers made, booked to the same phases
    assert ray_opt.budget.calls == here_opt.budget.calls
    assert ray_opt.budget.total == sum(here_requests.values())
    assert fanned.run_summary.total.prompt_tokens == here.run_summary.total.prompt_tokens > 0
    assert ray_usage.get_total_tokens() == here_usage.get_total_tokens()
    # and the candidates really were evaluated on the Ray actors
    from dspex.pool.fanout import pool_for

    assert pool_for("ray").stats()["calls"] > 0
