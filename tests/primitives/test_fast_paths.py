"""Fast paths in Prediction/Completions construction build what the general path builds."""

from __future__ import annotations

import json
import random

from dspex.adapters.values import _dumps_str_list, format_field_value
from dspex.primitives.prediction import Completions, Prediction
from dspex.signatures import InputField


class _Sub(Prediction):
    pass


def test_single_choice_prediction_matches_general_path() -> None:
    choice = {"answer": "Paris", "confidence": 0.9}
    fast = Prediction.from_completions([choice], signature="sig")
    general = _Sub.from_completions([dict(choice)], signature="sig")
    fast_vars, general_vars = dict(vars(fast)), dict(vars(general))
    assert vars(fast_vars.pop("_completions")) == vars(general_vars.pop("_completions"))
    assert list(fast_vars.items()) == list(general_vars.items())
    assert list(fast.keys()) == ["answer", "confidence"]
    assert fast.completions is not None and fast.completions.answer == ["Paris"]
    assert vars(fast.completions) == vars(Completions([choice], signature="sig"))
    choice["answer"] = "changed"  # the prediction does not share the caller's dict
    assert fast.answer == "Paris"
    fast.answer = "x"
    assert fast.completions.answer == ["Paris"]


def test_plain_string_lists_render_like_json_dumps() -> None:
    rnd = random.Random(3)
    chars = ["a", '"', "\\", "\n", "\x00", "\x1f", "\x7f", "é", "\u2028", " ", "[", ","]
    field = InputField()
    field.annotation = list[str]
    for _ in range(3000):
        value = ["".join(rnd.choice(chars) for _ in range(rnd.randint(0, 4))) for _ in range(3)]
        fast = _dumps_str_list(value)
        if fast is not None:
            assert fast == json.dumps(value, ensure_ascii=False)
        assert format_field_value(field, value) == format_field_value(field, value)
    assert _dumps_str_list([]) is None and _dumps_str_list(["a", 1]) is None
