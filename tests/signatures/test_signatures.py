from __future__ import annotations

import enum
from typing import Literal, Optional

import pytest

import dspex
from dspex.errors import SignatureError

dspy = pytest.importorskip("dspy")


class Mood(enum.Enum):
    HAPPY = "happy"


def test_string_form_types_and_default_instructions() -> None:
    sig = dspex.Signature("context: list[str], question -> answer: str, confidence: float")
    assert list(sig.input_fields) == ["context", "question"]
    assert sig.output_fields["confidence"].annotation is float
    assert sig.input_fields["context"].annotation == list[str]
    assert (
        sig.instructions
        == dspy.Signature(
            "context: list[str], question -> answer: str, confidence: float"
        ).instructions
    )
    assert sig.signature == "context, question -> answer, confidence"


def test_class_form_with_docstring_and_desc() -> None:
    class QA(dspex.Signature):
        """Answer questions."""

        question: str = dspex.InputField(desc="a trivia question")
        answer: Literal["a", "b"] = dspex.OutputField()
        mood: Optional[Mood] = dspex.OutputField()  # noqa: UP045

    assert QA.instructions == "Answer questions."
    assert QA.input_fields["question"].json_schema_extra["desc"] == "a trivia question"
    assert QA.output_fields["answer"].json_schema_extra["prefix"] == "Answer:"


def test_infer_prefix_matches_dspy() -> None:
    from dspy.signatures.signature import infer_prefix as dspy_prefix

    for name in ["camelCase", "HTMLParser", "text2number", "2text", "snake_case", "API_key", "x"]:
        assert dspex.signatures.infer_prefix(name) == dspy_prefix(name)


def test_manipulation_methods() -> None:
    sig = dspex.Signature("question -> answer")
    cot = sig.prepend("reasoning", dspex.OutputField(desc="${reasoning}"), str)
    assert list(cot.output_fields) == ["reasoning", "answer"]
    more = sig.append("context", dspex.InputField(), list[str])
    assert list(more.input_fields) == ["question", "context"]
    assert list(more.delete("context").input_fields) == ["question"]
    assert sig.with_instructions("Do it.").instructions == "Do it."
    updated = sig.with_updated_fields("answer", type_=int, desc="a number")
    assert updated.output_fields["answer"].annotation is int
    assert updated.output_fields["answer"].json_schema_extra["desc"] == "a number"
    assert sig.output_fields["answer"].annotation is str  # the original is untouched
    with pytest.raises(SignatureError, match="Invalid index"):
        sig.insert(5, "x", dspex.InputField())


def test_equality_and_state_round_trip() -> None:
    a = dspex.Signature("question -> answer", "Do it.")
    b = dspex.Signature("question -> answer", "Do it.")
    assert a == b and a.equals(b) and a != dspex.Signature("question -> answer", "Other.")
    state = a.dump_state()
    assert state == dspy.Signature("question -> answer", "Do it.").dump_state()
    restored = dspex.Signature("question -> answer").load_state(state)
    assert restored.instructions == "Do it."


def test_string_signatures_are_cached_but_independent() -> None:
    a = dspex.Signature("q -> a: int")
    b = dspex.Signature("q -> a: int")
    a.instructions = "changed"
    assert b.instructions != "changed"


def test_custom_types_from_the_caller_scope() -> None:
    sig = dspex.Signature("q -> mood: Mood")
    assert sig.output_fields["mood"].annotation is Mood


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("question answer", "exactly one '->'"),
        ("a -> b -> c", "exactly one '->'"),
        ("a, a -> b", "declared twice"),
        ("a -> a", "distinct names"),
        ("a: os.system -> b", "not a type|unknown type"),
        ("a: __import__('os') -> b", "unsupported type expression"),
        ("a: NotAType -> b", "unknown type name"),
        ("a: int[str] -> b", "cannot be parameterized"),
        ("a b -> c", "cannot parse"),
        ("*a -> b", "plain names"),
        ("a=1 -> b", "plain names"),
        ("a: Literal[x] -> b", "Literal values"),
    ],
)
def test_malformed_strings_raise_signature_error_with_position(text: str, reason: str) -> None:
    with pytest.raises(SignatureError, match=reason) as info:
        dspex.Signature(text)
    assert info.value.source == text
    assert info.value.reason


def test_annotation_without_field_is_an_error() -> None:
    with pytest.raises(SignatureError, match="InputField or OutputField"):

        class Bad(dspex.Signature):
            question: str

    with pytest.raises(SignatureError):
        dspex.Signature(42)  # type: ignore[arg-type]
    with pytest.raises(SignatureError):
        dspex.Signature({"a": "not a field"})


@pytest.mark.parametrize("text", ["a: Optional | int -> b", "a: Union[Literal] -> b"])
def test_bare_typing_forms_are_signature_errors(text: str) -> None:
    with pytest.raises(
        SignatureError, match=r"invalid type expression|cannot be parameterized|Optional"
    ):
        dspex.Signature(text)
