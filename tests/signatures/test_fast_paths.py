"""The fast paths of signature construction give exactly what the general paths give."""

from __future__ import annotations

import random
import warnings
from typing import Any

import pytest

import dspex
from dspex.errors import SignatureError
from dspex.signatures import parse
from dspex.signatures.parse import parse_signature_string, referenced_names


class Point:
    pass


def _outcome(text: str, custom: dict[str, Any] | None, *, fast: bool) -> tuple[Any, ...]:
    original = parse._parse_side_fast
    if not fast:
        parse._parse_side_fast = lambda *args: None  # type: ignore[assignment]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ("ok", parse_signature_string(text, custom))
    except SignatureError as exc:
        return ("error", str(exc), exc.position, exc.reason)
    finally:
        parse._parse_side_fast = original  # type: ignore[assignment]


def test_fast_side_parser_matches_the_ast_parser() -> None:
    rnd = random.Random(7)
    atoms = ["int", "str", "list", "dict", "Optional", "Literal", "None", "x", "m.Point", "1",
             "'q'", "float", "Union", "Point", "History", "class", "match", "__debug__", "é"]  # fmt: skip
    punct = [",", ", ", "[", "]", "|", " | ", ":", ": ", " ", "\t", "->", "(", ")", "=", "*"]
    customs: list[dict[str, Any] | None] = [None, {"Point": Point}, {"m": parse}]
    oks = 0
    for i in range(4000):
        a = "".join(rnd.choice(atoms + punct) for _ in range(rnd.randint(1, 10)))
        b = "".join(rnd.choice(atoms + punct) for _ in range(rnd.randint(1, 10)))
        text = rnd.choice([f"{a} -> {b}", f"q{i}: int, c -> {b}", f"x, y: {a} -> z"])
        custom = rnd.choice(customs)
        fast = _outcome(text, custom, fast=True)
        assert fast == _outcome(text, custom, fast=False), text
        oks += fast[0] == "ok"
    assert oks > 100


@pytest.mark.parametrize(
    "text",
    [
        "context: list[str], question -> answer: str, confidence: float",
        "a: dict[str, list[int]], b: int | None -> c: Optional[dict[str, float]]",
        "a, b, -> c",
        "a: Literal[1, 2] -> b: tuple[int, ...]",
    ],
)
def test_fast_side_parser_common_shapes(text: str) -> None:
    assert _outcome(text, None, fast=True) == _outcome(text, None, fast=False)


def test_referenced_names_skips_field_names_but_not_types() -> None:
    assert referenced_names("q1: int, c -> a: list[str]") == frozenset()
    assert referenced_names("a: dict[str, Point], b -> c: Point | None") == {"Point"}
    assert referenced_names("x: dict[str,Loc], y: int -> z: tuple[int, Other]") == {"Loc", "Other"}
    # with quotes, bracket depth is not trusted: names after any comma count
    assert "b" in referenced_names("q -> a: Literal['a, b'], b: list[Loc]")


def test_local_types_still_resolve_from_the_caller() -> None:
    class Local:
        pass

    sig = dspex.Signature("a: dict[str, Local], b -> c: list[Point]")
    assert sig.input_fields["a"].annotation == dict[str, Local]
    assert sig.output_fields["c"].annotation == list[Point]


def test_string_signatures_are_independent_classes() -> None:
    one = dspex.Signature("a -> b")
    two = dspex.Signature("a -> b")
    assert one is not two and one == two
    one.input_fields  # noqa: B018
    one._fields["a"].json_schema_extra["desc"] = "changed"
    assert two._fields["a"].json_schema_extra["desc"] == "${a}"
    one.instructions = "new"
    assert two.instructions == "Given the fields `a`, produce the fields `b`."


def test_make_signature_uses_the_given_name() -> None:
    from dspex.signatures import make_signature

    assert make_signature("a -> b", signature_name="MySig").__name__ == "MySig"
    assert dspex.Signature("a -> b").__name__ == "StringSignature"


def test_class_form_annotations_resolve_like_before() -> None:
    class WithStrings(dspex.Signature):
        """Doc."""

        a: Point = dspex.InputField()
        b: list[Point] = dspex.OutputField()
        c: int = dspex.OutputField()

    assert WithStrings.input_fields["a"].annotation is Point
    assert WithStrings.output_fields["b"].annotation == list[Point]
    assert WithStrings.output_fields["c"].annotation is int

    NotAType = 3
    with pytest.raises(SignatureError, match="is not a type"):

        class Bad(dspex.Signature):
            x: NotAType = dspex.InputField()  # type: ignore[valid-type]

    with pytest.raises(SignatureError, match="unknown type name"):

        class Unknown(dspex.Signature):
            x: Nowhere = dspex.InputField()  # type: ignore[name-defined]  # noqa: F821
