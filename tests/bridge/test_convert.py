"""The wire form's fast paths give exactly what the general conversion gives.

``Encoder.encode``/``Decoder.decode`` check exact scalar/dict/list types first and build a
reply's ``Prediction`` in one step (``Prediction.of_store``); these tests pin the results to
the general rules (subclasses, non-string keys, tagged dicts, nesting) and the prediction to
the one its constructor builds.
"""

from __future__ import annotations

import enum
from typing import Any

import pytest

from dspex.bridge.convert import TAG, Decoder, Encoder
from dspex.primitives.prediction import Prediction


class Color(enum.IntEnum):
    RED = 1


class Text(str):
    pass


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        ("q", "q"),
        (3, 3),
        (2.5, 2.5),
        (True, True),
        (None, None),
        (b"x", b"x"),
        ({"question": "q", "n": 1}, {"question": "q", "n": 1}),
        ([], []),
        (["a", 1, None], ["a", 1, None]),
        ({"a": {"b": [1, {"c": None}]}}, {"a": {"b": [1, {"c": None}]}}),
        # subclasses of scalars keep crossing as they did (the isinstance path)
        (Color.RED, Color.RED),
        (Text("t"), Text("t")),
        # non-string keys and a key that looks like a tag: the tagged dict form
        ({1: "a", "b": 2}, {TAG: "dict", "items": [[1, "a"], ["b", 2]]}),
        ({TAG: "x"}, {TAG: "dict", "items": [[TAG, "x"]]}),
        ((1, "a"), {TAG: "tuple", "items": [1, "a"]}),
        ({"t": (1,)}, {"t": {TAG: "tuple", "items": [1]}}),
    ],
)
def test_encode_matches_the_general_rules(value: Any, wire: Any) -> None:
    out = Encoder().encode(value)
    assert out == wire
    assert type(out) is type(wire)


def test_encode_copies_dicts_and_lists() -> None:
    """A value kept for later (a recipe's arguments) must not change with the caller's."""
    kwargs = {"question": "q", "demos": ["a"]}
    wire = Encoder().encode(kwargs)
    kwargs["question"] = "changed"
    kwargs["demos"].append("b")
    assert wire == {"question": "q", "demos": ["a"]}


def test_decode_round_trips_nested_and_tagged_values() -> None:
    enc, dec = Encoder(), Decoder("dspex")
    value = {"a": [1, {"b": (2, 3)}], "c": {4: "x"}, "d": None}
    assert dec.decode(enc.encode(value)) == value


def _wire(usage: Any) -> dict[str, Any]:
    return {
        TAG: "prediction",
        "store": {"answer": "cedar", "extra": [1, {"k": "v"}]},
        "completions": None,
        "usage": usage,
    }


@pytest.mark.parametrize(
    "usage", [None, {}, {"openai/test": {"prompt_tokens": 3, "prompt_tokens_details": None}}]
)
def test_decoded_prediction_is_the_one_its_constructor_builds(usage: Any) -> None:
    wire = _wire(usage)
    got = Decoder("dspex").decode(wire)
    want = Prediction(answer="cedar", extra=[1, {"k": "v"}])
    if usage:
        want.set_lm_usage(usage)
    assert type(got) is Prediction
    assert vars(got) == vars(want)  # every attribute, so a new one in __init__ shows here
    assert got.get_lm_usage() == (usage or None)
    got.answer = "changed"  # the prediction owns its store
    assert wire["store"]["answer"] == "cedar"


def test_of_store_matches_the_constructor_for_subclasses_too() -> None:
    class Scored(Prediction):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            object.__setattr__(self, "marker", True)

    got = Scored.of_store({"score": 1.0}, {"m": {"total_tokens": 1}})
    assert type(got) is Scored and got.marker is True
    assert got.score == 1.0 and got.get_lm_usage() == {"m": {"total_tokens": 1}}
    plain = Prediction.of_store({"a": 1})
    assert vars(plain) == vars(Prediction(a=1))
