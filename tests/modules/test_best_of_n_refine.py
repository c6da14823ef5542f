"""Native ``BestOfN`` and ``Refine`` against DSPy 3.4.1 on the same LM replies: the same
request bytes at every attempt (temperature 1.0, the hint field, the feedback prompt) and the
same final prediction; on a user-defined Module class."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import dspex
from dspex.modules.best_of_n import BestOfN
from dspex.modules.refine import Refine
from dspex.testing import LMServer

dspy = pytest.importorskip("dspy")


def make_program(lib: Any) -> Any:
    class QA(lib.Module):
        def __init__(self) -> None:
            super().__init__()
            self.draft = lib.Predict("question -> draft")
            self.answer = lib.Predict("question, draft -> answer")

        def forward(self, question: str) -> Any:
            draft = self.draft(question=question).draft
            return self.answer(question=question, draft=draft)

    return QA()


def one_word(args: dict[str, Any], pred: Any) -> float:
    return 1.0 if len(pred.answer.split()) == 1 else 0.0


def _attempt(i: int, answer: str) -> list[dict[str, Any]]:
    return [{"draft": f"draft {i}"}, {"answer": answer}]


def _feedback(i: int) -> dict[str, Any]:
    return {
        "discussion": f"discussion {i}",
        "advice": {"draft": f"draft advice {i}", "answer": "Answer in one word."},
    }


def _run(
    server: LMServer, lib: Any, make: Any, replies: list[Any], use_async: bool
) -> tuple[list[Any], Any]:
    server.clear()
    server.reply(*replies)
    lm = lib.LM("openai/test", api_base=server.url, api_key="k", cache=False, num_retries=0)
    module = make(lib)
    with lib.context(lm=lm):
        pred = (
            asyncio.run(module.acall(question="Capital of Belgium?"))
            if use_async
            else module(question="Capital of Belgium?")
        )
    requests = [
        (r.json["messages"], {k: v for k, v in r.json.items() if k != "messages"})
        for r in server.requests
    ]
    return requests, pred


def _compare(server: LMServer, make: Any, replies: list[Any], use_async: bool = False) -> Any:
    ours, pred = _run(server, dspex, make, replies, use_async)
    theirs, dpred = _run(server, dspy, make, replies, False)
    assert len(ours) == len(theirs)
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert a == b, f"request {i} differs"
    assert (pred is None) == (dpred is None)
    if pred is not None:
        assert dict(pred.items()) == dict(dpred.items())
    return ours, pred


@pytest.mark.parametrize("use_async", [False, True])
def test_best_of_n_matches_dspy(server: LMServer, use_async: bool) -> None:
    def make(lib: Any) -> Any:
        cls = BestOfN if lib is dspex else dspy.BestOfN
        return cls(module=make_program(lib), N=3, reward_fn=one_word, threshold=1.0)

    replies = [*_attempt(0, "It is Brussels"), *_attempt(1, "Brussels"), *_attempt(2, "never")]
    requests, pred = _compare(server, make, replies, use_async)
    assert pred.answer == "Brussels" and len(requests) == 4  # stopped at the threshold
    assert all(opts.get("temperature") == 1.0 for _, opts in requests)


def test_best_of_n_keeps_best_when_none_reaches_threshold(server: LMServer) -> None:
    def reward(args: dict[str, Any], pred: Any) -> float:
        return float(len(pred.answer))

    def make(lib: Any) -> Any:
        cls = BestOfN if lib is dspex else dspy.BestOfN
        return cls(module=make_program(lib), N=3, reward_fn=reward, threshold=100.0)

    replies = [*_attempt(0, "ab"), *_attempt(1, "abcd"), *_attempt(2, "abc")]
    _, pred = _compare(server, make, replies)
    assert pred.answer == "abcd"


def test_best_of_n_failures_and_fail_count(server: LMServer, capsys: Any) -> None:
    def flaky(args: dict[str, Any], pred: Any) -> float:
        if pred.answer == "boom":
            raise ValueError("reward failed")
        return 0.5

    def make(lib: Any) -> Any:
        cls = BestOfN if lib is dspex else dspy.BestOfN
        return cls(module=make_program(lib), N=3, reward_fn=flaky, threshold=1.0)

    replies = [*_attempt(0, "boom"), *_attempt(1, "fine"), *_attempt(2, "boom")]
    _, pred = _compare(server, make, replies)
    assert pred.answer == "fine"
    out = capsys.readouterr().out
    assert out.count("BestOfN: Attempt 1 failed with rollout id 0: reward failed") == 2


@pytest.mark.parametrize("use_async", [False, True])
def test_refine_matches_dspy_with_feedback_and_hints(server: LMServer, use_async: bool) -> None:
    def make(lib: Any) -> Any:
        cls = Refine if lib is dspex else dspy.Refine
        return cls(module=make_program(lib), N=3, reward_fn=one_word, threshold=1.0)

    replies = [
        *_attempt(0, "It is Brussels"),
        _feedback(0),
        *_attempt(1, "The city of Brussels"),
        _feedback(1),
        *_attempt(2, "Brussels"),
    ]
    requests, pred = _compare(server, make, replies, use_async)
    assert pred.answer == "Brussels" and len(requests) == 8
    feedback_prompt = str(requests[2][0])
    assert "program_trajectory" in feedback_prompt and "draft 0" in feedback_prompt
    assert "`hint_`" in str(requests[3][0]) and "draft advice 0" in str(requests[3][0])


def test_refine_no_feedback_after_last_attempt(server: LMServer) -> None:
    def make(lib: Any) -> Any:
        cls = Refine if lib is dspex else dspy.Refine
        return cls(module=make_program(lib), N=2, reward_fn=one_word, threshold=1.0)

    replies = [*_attempt(0, "two words"), _feedback(0), *_attempt(1, "three more words")]
    requests, pred = _compare(server, make, replies)
    assert len(requests) == 5 and pred.answer == "two words"
