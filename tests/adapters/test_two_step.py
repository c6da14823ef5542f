"""TwoStepAdapter vs DSPy 3.4.1: the same two requests (main LM, extraction LM), equal values."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

import dspex
from dspex.errors import UserError
from dspex.testing import LMServer
from tests.adapters.corpus import CASES

dspy = pytest.importorskip("dspy")
pytestmark = pytest.mark.dspy
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@pytest.mark.parametrize("case", CASES[:60:3], ids=lambda c: f"seed{c.seed}")
def test_format_and_extractor_prompt_match(case: Any) -> None:
    d_sig, n_sig = case.build(dspy), case.build(dspex)
    d_lm = dspy.LM("openai/test", api_key="k")
    n_lm = dspex.LM("openai/test", api_key="k")
    d_ad, n_ad = dspy.TwoStepAdapter(d_lm), dspex.TwoStepAdapter(n_lm)
    d_demos = [dspy.Example(**d) for d in case.demos]
    n_demos = [dspex.Example(**d) for d in case.demos]
    assert n_ad.format(n_sig, n_demos, dict(case.inputs)) == d_ad.format(
        d_sig, d_demos, dict(case.inputs)
    )
    d_ext = d_ad._create_extractor_signature(d_sig)
    n_ext = n_ad.extractor_signature(n_sig)
    assert n_ext.instructions == d_ext.instructions
    text = {"text": "some reply"}
    assert dspex.ChatAdapter().format(n_ext, [], text) == dspy.ChatAdapter().format(d_ext, [], text)


def _call(lib: Any, server: LMServer, sync: bool) -> tuple[Any, list[Any]]:
    server.clear()
    main = lib.LM("openai/main", api_base=server.url, api_key="k", cache=False, num_retries=0)
    extract = lib.LM("openai/extract", api_base=server.url, api_key="k", cache=False, num_retries=0)
    sig = lib.Signature("question: str, context: list[str] -> answer: str, score: int")
    adapter = lib.TwoStepAdapter(extract)
    inputs = {"question": "why?", "context": ["a", "b"]}
    if sync:
        values = adapter(main, {}, sig, [], inputs)
    else:
        values = asyncio.run(adapter.acall(main, {}, sig, [], inputs))
    return values, [(r.json["model"], r.json["messages"]) for r in server.requests]


@pytest.mark.parametrize("sync", [True, False])
def test_two_calls_match_dspy(server: LMServer, sync: bool) -> None:
    expected, d_requests = _call(dspy, server, sync)
    got, n_requests = _call(dspex, server, sync)
    assert n_requests == d_requests
    assert [r[0] for r in n_requests] == ["main", "extract"]
    assert got == expected


def test_extraction_model_must_be_an_lm() -> None:
    with pytest.raises(UserError, match="extraction_model must be an instance"):
        dspex.TwoStepAdapter("openai/gpt-4o-mini")
