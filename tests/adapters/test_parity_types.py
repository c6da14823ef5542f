"""Custom types (images, files, audio, code, reasoning, documents, tools) vs DSPy 3.4.1, byte for byte.

Each case is built once per library and checked with Chat, JSON and XML adapters: the full
message list must serialize to the same bytes, and parsing the reply DSPy itself writes for
the case's outputs must give equal values (or fail in both).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

import dspex
from tests.adapters.corpus_types import TYPE_CASES, TypeCase

dspy = pytest.importorskip("dspy")
pytestmark = pytest.mark.dspy

ADAPTERS = ["ChatAdapter", "JSONAdapter", "XMLAdapter"]
CHUNKS = 8


def _dump(messages: Any) -> str:
    return json.dumps(messages, ensure_ascii=False)


def test_type_corpus_is_large_and_varied() -> None:
    assert len(TYPE_CASES) >= 500
    kinds = {k for c in TYPE_CASES for _, k in c.inputs + c.outputs}
    assert {"image", "images", "file", "audio", "code", "reasoning", "documents"} <= kinds
    assert sum(c.tools for c in TYPE_CASES) > 100
    assert sum(1 for c in TYPE_CASES if c.n_demos) > 150


def _parse(lib: Any, adapter: str, sig: Any, completion: str) -> Any:
    try:
        value = getattr(lib, adapter)().parse(sig, completion)
    except Exception as exc:  # both must fail alike
        return ("error", isinstance(exc, ValueError))
    return ("ok", {k: v.model_dump() if hasattr(v, "model_dump") else v for k, v in value.items()})


def _check(case: TypeCase) -> None:
    built = {
        lib: (case.build(lib), case.demos(lib), case.input_values(lib)) for lib in (dspy, dspex)
    }
    outputs = case.output_values(dspy)
    for adapter in ADAPTERS:
        d_sig, d_demos, d_inputs = built[dspy]
        n_sig, n_demos, n_inputs = built[dspex]
        expected = getattr(dspy, adapter)().format(d_sig, d_demos, dict(d_inputs))
        got = getattr(dspex, adapter)().format(n_sig, n_demos, dict(n_inputs))
        assert _dump(got) == _dump(expected), f"seed {case.seed} ({adapter})"
        completion = getattr(dspy, adapter)().format_assistant_message_content(d_sig, outputs)
        assert _parse(dspex, adapter, n_sig, completion) == _parse(
            dspy, adapter, d_sig, completion
        ), f"seed {case.seed} ({adapter}): {completion!r}"


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_types_match_dspy(chunk: int) -> None:
    """Half of the corpus in the default run (every case with ``-m slow``)."""
    for case in TYPE_CASES[chunk::CHUNKS][::2]:
        _check(case)


@pytest.mark.slow
@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_types_match_dspy_full_corpus(chunk: int) -> None:
    for case in TYPE_CASES[chunk::CHUNKS]:
        _check(case)
