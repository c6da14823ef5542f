"""Property tests: parsers return a value or raise only their typed error."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

import dspex
from dspex.errors import AdapterParseError, SignatureError

ALPHABET = st.characters(codec="utf-8", exclude_categories=("Cs",))
TOKENS = st.sampled_from(
    ["a", "b", "question", ":", ",", "->", " ", "int", "str", "list", "[", "]", "|", "None", "Literal",
     "'x'", "(", ")", "=", "*", "dict", "Optional", ".", "os", "\n", "1", "..."]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(ALPHABET, max_size=40), st.lists(TOKENS, max_size=14).map("".join)))
def test_signature_parser_never_leaks_other_errors(text: str) -> None:
    try:
        sig = dspex.Signature(text)
    except SignatureError as exc:
        assert exc.reason
    else:
        assert "->" in text and isinstance(sig.signature, str)


SIG = dspex.Signature("question -> answer: int, tags: list[str], ok: bool, note")


@settings(max_examples=300, deadline=None)
@given(st.text(ALPHABET, max_size=200))
def test_output_parsers_return_dicts_or_typed_errors(text: str) -> None:
    for adapter in (dspex.ChatAdapter(), dspex.JSONAdapter()):
        try:
            out = adapter.parse(SIG, text)
        except AdapterParseError as exc:
            assert exc.raw is not None
        else:
            assert set(out) == {"answer", "tags", "ok", "note"}


# str.splitlines() (DSPy's parser, mirrored for parity) also breaks lines at these characters,
# so text containing them does not round-trip through ChatAdapter - in DSPy either.
LINE_BREAKS = "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029\r"
TEXT = st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters=LINE_BREAKS)

values = st.fixed_dictionaries(
    {
        "answer": st.integers(-(10**6), 10**6),
        "tags": st.lists(st.text(TEXT, max_size=10).filter(lambda s: "[[" not in s), max_size=3),
        "ok": st.booleans(),
        "note": st.text(TEXT, max_size=30)
        .map(str.strip)
        .filter(lambda s: "[[ ##" not in s and s != ""),
    }
)


@settings(max_examples=200, deadline=None)
@given(values)
def test_format_then_parse_round_trips(outputs: dict[str, object]) -> None:
    for adapter in (dspex.ChatAdapter(), dspex.JSONAdapter()):
        text = adapter.format_assistant_message_content(SIG, outputs)
        assert adapter.parse(SIG, text) == outputs


def _reference_sections(completion: str) -> list[tuple[str | None, str]]:
    """DSPy's original line-by-line algorithm."""
    import re

    header = re.compile(r"\[\[ ## (\w+) ## \]\]")
    sections: list[tuple[str | None, list[str]]] = [(None, [])]
    for line in completion.splitlines():
        match = header.match(line.strip())
        if match:
            rest = line.strip()[match.end() :].strip()
            sections.append((match.group(1), [rest] if rest else []))
        else:
            sections[-1][1].append(line)
    return [(k, "\n".join(v).strip()) for k, v in sections]


PIECES = st.sampled_from(
    [
        "[[ ## a ## ]]",
        "[[ ## b_2 ## ]]",
        "[[ ## completed ## ]]",
        "\n",
        "  ",
        "\t",
        "x",
        "text",
        "[[",
        "## ]]",
        "\r",
        "é",
        "\x0b",
        "\x1c",
        "[[ ## ",
        " ## ]]",
        "[[ ## 1x ## ]]",
        "[[ ## a b ## ]]",
        "[[ ## _ ## ]]",
    ]
)


@settings(max_examples=1500, deadline=None)
@given(st.lists(PIECES, max_size=25).map("".join))
def test_fast_section_split_equals_dspy_algorithm(text: str) -> None:
    from dspex.adapters.chat import split_sections

    assert split_sections(text) == _reference_sections(text)
