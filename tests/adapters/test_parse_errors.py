"""A parse failure names the adapter, the raw completion and the signature being parsed."""

from __future__ import annotations

import pytest

import dspex
from dspex.adapters import ChatAdapter, JSONAdapter, XMLAdapter
from dspex.errors import AdapterParseError


class QA(dspex.Signature):
    question: str = dspex.InputField()
    answer: str = dspex.OutputField()
    explanation: str = dspex.OutputField()


@pytest.mark.parametrize(
    ("adapter", "completion"),
    [
        (ChatAdapter(), "[[ ## answer ## ]]\nParis"),
        (JSONAdapter(), '{"answer": "Paris"}'),
        (XMLAdapter(), "<answer>Paris</answer>"),
        (XMLAdapter(), "<answer>Paris"),  # not XML at all
    ],
)
def test_parse_error_carries_the_signature(adapter: object, completion: str) -> None:
    with pytest.raises(AdapterParseError) as info:
        adapter.parse(QA, completion)  # type: ignore[attr-defined]
    assert info.value.signature is QA
    assert info.value.adapter_name == type(adapter).__name__
    assert "Paris" in info.value.lm_response
    assert "explanation" in str(info.value) or "XML" in str(info.value)
