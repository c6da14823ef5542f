"""DSPy's error metadata on DSPex's LM and parse errors: codes, fields, text, pickling."""

from __future__ import annotations

import pickle

import pytest

import dspex
from dspex.errors import (
    AdapterParseError,
    ContextWindowExceeded,
    LMBadRequestError,
    LMError,
    LMRateLimitError,
)


def test_lm_errors_carry_codes_and_fields_and_prefix_the_model() -> None:
    err = LMRateLimitError("slow down", model="m1", provider="p", status=429, retry_after=1.5)
    assert (err.code, err.model, err.provider, err.status, err.retry_after) == (
        "rate_limit", "m1", "p", 429, 1.5,
    )  # fmt: skip
    assert err.request_id is None and err.provider_code is None
    assert str(err) == "[m1] slow down"
    assert str(LMError("plain")) == "plain" and LMError().code == "lm_error"
    assert LMError("x", code="custom").code == "custom"
    again = pickle.loads(pickle.dumps(LMError("x", code="custom", model="m")))
    assert (again.code, str(again)) == ("custom", "[m] x")
    assert [cls().code for cls in (dspex.LMTimeoutError, dspex.LMUnexpectedError)] == [
        "timeout", "unexpected",
    ]  # fmt: skip


def test_context_window_error_defaults_and_keyword_form() -> None:
    err = ContextWindowExceeded()
    assert isinstance(err, LMBadRequestError) and err.code == "context_window_exceeded"
    assert (err.model, str(err)) == (None, "Context window exceeded")
    assert str(ContextWindowExceeded(model="m")) == "[m] Context window exceeded"
    assert str(ContextWindowExceeded(model="m", message="too big")) == "[m] too big"
    assert str(ContextWindowExceeded("positional")) == "positional"
    assert str(pickle.loads(pickle.dumps(ContextWindowExceeded(model="m")))) == (
        "[m] Context window exceeded"
    )


def test_adapter_parse_error_accepts_dspys_constructor() -> None:
    sig = dspex.make_signature("q -> a, b")
    err = AdapterParseError(
        adapter_name="JSONAdapter",
        signature=sig,
        lm_response="{}",
        message="first",
        parsed_result={"a": 1},
    )
    assert (err.adapter_name, err.signature, err.lm_response, err.parsed_result) == (
        "JSONAdapter", sig, "{}", {"a": 1},
    )  # fmt: skip
    assert err.code == "adapter_parse_error"
    assert str(err) == (
        "first\n\nAdapter JSONAdapter failed to parse the LM response. \n\nLM Response: {} \n\n"
        "Expected to find output fields in the LM response: [a, b] \n\n"
        "Actual output fields parsed from the LM response: [a] \n\n"
    )
    native = AdapterParseError("text", adapter="ChatAdapter", raw="r", parsed={}, missing=["a"])
    assert (native.adapter_name, native.lm_response, native.parsed_result) == (
        "ChatAdapter",
        "r",
        {},
    )
    with pytest.raises(ValueError):
        raise native
