from __future__ import annotations

import pickle

import pytest

from dspex.primitives import Completions, Example, Prediction


def test_example_dict_and_attribute_access() -> None:
    ex = Example(question="q", answer="a", dspy_uuid="x")
    assert ex.question == "q" and ex["answer"] == "a"
    assert ex.keys() == ["question", "answer"]
    assert ex.keys(include_dspy=True) == ["question", "answer", "dspy_uuid"]
    assert len(ex) == 2 and "question" in ex
    ex.extra = 1
    assert ex["extra"] == 1
    with pytest.raises(AttributeError):
        _ = ex.missing


def test_with_inputs_inputs_labels() -> None:
    ex = Example(question="q", answer="a").with_inputs("question")
    assert ex.inputs().toDict() == {"question": "q"}
    assert ex.labels().toDict() == {"answer": "a"}
    assert ex.copy(answer="b").inputs().keys() == ["question"]
    with pytest.raises(ValueError, match="with_inputs"):
        Example(question="q").inputs()


def test_example_equality_hash_and_without() -> None:
    a = Example(x=1, y=2)
    assert a == Example({"x": 1}, y=2)
    assert hash(a) == hash(Example(x=1, y=2))
    assert a.without("y").toDict() == {"x": 1}
    assert repr(a) == "Example({'x': 1, 'y': 2}) (input_keys=None)"


def test_prediction_from_completions_and_score_math() -> None:
    pred = Prediction.from_completions([{"answer": "a", "score": 1}, {"answer": "b", "score": 2}])
    assert pred.answer == "a"
    assert pred.completions is not None and pred.completions.answer == ["a", "b"]
    assert pred.completions[1].answer == "b"
    assert len(pred.completions) == 2
    assert float(pred) == 1.0 and pred + 1 == 2.0 and pred < 2 and 3 / pred == 3.0
    with pytest.raises(ValueError, match="score"):
        float(Prediction(answer="x"))
    with pytest.raises(TypeError):
        _ = pred + "x"


def test_completions_reject_ragged_lists() -> None:
    with pytest.raises(ValueError):
        Completions({"a": [1, 2], "b": [1]})


def test_pickle_round_trip() -> None:
    ex = Example(q="1").with_inputs("q")
    again = pickle.loads(pickle.dumps(ex))
    assert again == ex and again.inputs().keys() == ["q"]
    pred = Prediction(answer="x")
    assert pickle.loads(pickle.dumps(pred)).answer == "x"
