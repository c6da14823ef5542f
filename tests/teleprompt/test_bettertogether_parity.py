"""BetterTogether: DSPy 3.4.1's sequence, scores and selection, on one LMServer by rule.

- ``p -> p`` with BootstrapFewShotWithRandomSearch: the same LM requests in the same order,
  the same candidate scores and strategies and the same final program as DSPy;
- ``p -> w`` natively end to end: a user module, prompt optimization, then fine-tuning through
  an OpenAI-compatible provider over HTTP (the server's fine-tuning API), the fine-tuned model
  relaunched, evaluated and selected; a failing fine-tune keeps the best program so far.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

import dspex
from dspex.clients.openai import OpenAIProvider
from dspex.errors import CallError, ConfigurationError, OptimizerTypeError
from dspex.teleprompt import BetterTogether, BootstrapFewShotWithRandomSearch, BootstrapFinetune
from dspex.testing import LMServer
from tests.teleprompt import _oracle
from tests.teleprompt._oracle import exact, request_log, trainset

dspy = pytest.importorskip("dspy")
pytestmark = pytest.mark.dspy

TRAIN = [2, 9, 4, 7, 5, 12, 3, 8]
VAL = [6, 15, 10, 21]


@pytest.fixture(scope="module")
def server() -> Iterator[LMServer]:
    with LMServer() as srv:
        yield srv


def _lm(lib: Any, server: LMServer, **kwargs: Any) -> Any:
    return lib.LM(
        "openai/test", api_base=server.url, api_key="k", cache=False, num_retries=0, **kwargs
    )


def _run_p_p(lib: Any, server: LMServer) -> tuple[Any, Any]:
    _oracle.serve_oracle(server)
    student = _oracle.two_step(lib)
    student.set_lm(_lm(lib, server))
    p = lib.BootstrapFewShotWithRandomSearch(
        metric=exact,
        max_bootstrapped_demos=1,
        max_labeled_demos=2,
        num_candidate_programs=1,
        num_threads=1,
    )
    optimizer = lib.BetterTogether(metric=exact, p=p)
    with lib.context(lm=_lm(lib, server)):
        program = optimizer.compile(
            student,
            trainset=trainset(lib, TRAIN),
            valset=trainset(lib, VAL),
            strategy="p -> p",
            seed=3,
            num_threads=1,
        )
    return program, request_log(server)


def _state(program: Any) -> str:
    """The program's state, the LMs' own entries aside (LM state is compared elsewhere);
    which model each predictor uses is kept."""
    state = program.dump_state()
    for entry in state.values():
        entry["lm"] = entry["lm"] and entry["lm"]["model"]
    return json.dumps(state, sort_keys=True, default=repr)


def test_prompt_sequence_matches_dspy(server: LMServer) -> None:
    theirs, their_requests = _run_p_p(dspy, server)
    ours, our_requests = _run_p_p(dspex, server)
    assert our_requests == their_requests and len(our_requests) > 20
    summary = [(c["strategy"], c["score"]) for c in ours.candidate_programs]
    assert summary == [(c["strategy"], c["score"]) for c in theirs.candidate_programs]
    assert {s for s, _ in summary} == {"", "p", "p -> p"}
    assert _state(ours) == _state(theirs)
    assert [_state(c["program"]) for c in ours.candidate_programs] == [
        _state(c["program"]) for c in theirs.candidate_programs
    ]
    assert ours.flag_compilation_error_occurred is theirs.flag_compilation_error_occurred is False


class RecordingProvider(OpenAIProvider):
    """The HTTP provider, recording the LM lifecycle calls BetterTogether makes."""

    def __init__(self) -> None:
        super().__init__(poll_interval=0)
        self.calls: list[tuple[str, str]] = []

    def launch(self, lm: Any, launch_kwargs: dict[str, Any] | None = None) -> None:  # type: ignore[override]
        self.calls.append(("launch", lm.model))

    def kill(self, lm: Any, launch_kwargs: dict[str, Any] | None = None) -> None:  # type: ignore[override]
        self.calls.append(("kill", lm.model))


def _p_w(server: LMServer, provider: RecordingProvider) -> Any:
    _oracle.serve_oracle(server)
    student = _oracle.two_step(dspex)
    student.set_lm(_lm(dspex, server, provider=provider))
    optimizer = BetterTogether(
        metric=exact,
        p=BootstrapFewShotWithRandomSearch(
            metric=exact,
            max_bootstrapped_demos=1,
            max_labeled_demos=1,
            num_candidate_programs=1,
            num_threads=1,
        ),
        w=BootstrapFinetune(metric=exact),
    )
    return optimizer.compile(
        student,
        trainset=trainset(dspex, TRAIN),
        valset=trainset(dspex, VAL),
        strategy="p -> w",
        seed=0,
    )


def test_prompt_then_weights_end_to_end(server: LMServer) -> None:
    provider = RecordingProvider()
    before = set(server.finetuning.jobs)
    program = _p_w(server, provider)
    (job,) = [j for j in server.finetuning.jobs if j not in before]
    tuned = f"openai/ft:test:dspex::{job}"
    strategies = {c["strategy"]: c for c in program.candidate_programs}
    assert set(strategies) == {"", "p", "p -> w"}
    w_program = strategies["p -> w"]["program"]
    assert [p.lm.model for p in w_program.predictors()] == [tuned, tuned]
    assert server.finetuning.training_data(job)  # the traces of the prompt-optimized program
    assert provider.calls == [
        ("launch", "openai/test"),  # before the baseline
        ("kill", "openai/test"),  # BootstrapFinetune frees the LM before training
        ("launch", tuned),  # the model changed: relaunched before its evaluation
        ("kill", tuned),  # the end: the latest program's LMs
    ]
    scores = [c["score"] for c in program.candidate_programs]
    assert scores == sorted(scores, reverse=True)
    assert program.flag_compilation_error_occurred is False


def test_failed_finetune_keeps_the_best_program(server: LMServer) -> None:
    provider = RecordingProvider()
    server.finetuning.fail_next("out of quota")
    _oracle.serve_oracle(server)
    program = _p_w(server, provider)
    assert program.flag_compilation_error_occurred is True
    assert [c["strategy"] for c in program.candidate_programs] in (["", "p"], ["p", ""])
    assert all(p.lm.model == "openai/test" for p in program.predictors())
    assert provider.calls[-1] == ("kill", "openai/test")


def test_bad_arguments_are_typed_errors(server: LMServer) -> None:
    student = _oracle.two_step(dspex)
    with pytest.raises(OptimizerTypeError, match="must be a Teleprompter"):
        BetterTogether(metric=exact, p="nope")  # type: ignore[arg-type]
    optimizer = BetterTogether(metric=exact)
    with pytest.raises(ConfigurationError, match="these have none"):
        optimizer.compile(student, trainset=trainset(dspex, TRAIN))
    student.set_lm(_lm(dspex, server))
    with pytest.raises(CallError, match="cannot be empty"):
        optimizer.compile(student, trainset=[])
    with pytest.raises(CallError, match=r"range \[0, 1\)"):
        optimizer.compile(student, trainset=trainset(dspex, TRAIN), valset_ratio=1.0)
    with pytest.raises(CallError, match="invalid optimizer keys"):
        optimizer.compile(student, trainset=trainset(dspex, TRAIN), strategy="p -> q")
    with pytest.raises(CallError, match="Invalid compile arguments"):
        optimizer.compile(
            student, trainset=trainset(dspex, TRAIN), optimizer_compile_args={"w": {"bogus": 1}}
        )
    with pytest.raises(CallError, match="not allowed"):
        optimizer.compile(
            student, trainset=trainset(dspex, TRAIN), optimizer_compile_args={"p": {"student": 1}}
        )
