"""DSPy's answer metrics: the same value as ``dspy.evaluate.metrics`` on a varied corpus."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

import dspex
from dspex.evaluate import metrics

PAIRS = [
    "The Eiffel Tower",
    "eiffel tower",
    "Eiffel Tower, Paris",
    "Paris",
    "yes",
    "No",
    "noanswer",
    "",
    "  a   the an ",
    "Café au lait!",
    "cafe au lait",
    "naïve résumé",
    "C++ & Rust -- 2024",
    "2,024 items",
    "über Straße",
    "東京 タワー",
    "tab\tseparated\nlines",
    "emoji 🙂 here",
]

PASSAGES = [
    "The Eiffel Tower is in Paris, France.",
    "Café au lait is coffee with hot milk.",
    "東京 タワー is in Minato.",
    "Nothing to see here.",
    "C++ & Rust -- 2024 were compared.",
]


def test_metrics_match_dspy(capsys: Any) -> None:
    pytest.importorskip("dspy")
    from dspy.dsp.utils import DPR_normalize
    from dspy.evaluate import metrics as theirs

    for a, b in itertools.product(PAIRS, repeat=2):
        assert metrics.normalize_text(a) == theirs.normalize_text(a)
        assert metrics.em_score(a, b) == theirs.em_score(a, b)
        assert metrics.f1_score(a, b) == theirs.f1_score(a, b), (a, b)
        assert metrics.hotpot_f1_score(a, b) == theirs.hotpot_f1_score(a, b), (a, b)
        assert metrics.precision_score(a, b) == theirs.precision_score(a, b), (a, b)
        assert metrics.EM(a, [b, "Paris"]) == theirs.EM(a, [b, "Paris"])
        assert metrics.F1(a, [b, "Paris"]) == theirs.F1(a, [b, "Paris"])
        assert metrics.HotPotF1(a, [b, "yes"]) == theirs.HotPotF1(a, [b, "yes"])
    for text in PAIRS + PASSAGES:
        assert metrics.dpr_normalize(text) == DPR_normalize(text), text
    for answer in PAIRS:
        if not answer.strip():
            continue
        ex = dspex.Example(answer=answer)
        pred = dspex.Prediction(answer=answer.upper(), context=PASSAGES)
        for frac in (1.0, 0.5):
            assert metrics.answer_exact_match(ex, pred, frac=frac) == theirs.answer_exact_match(
                ex, pred, frac=frac
            )
        assert metrics.answer_passage_match(ex, pred) == theirs.answer_passage_match(ex, pred)
        ex_list = dspex.Example(answer=[answer, "Minato"])
        assert metrics.answer_passage_match(ex_list, pred) == theirs.answer_passage_match(
            ex_list, pred
        )
    out = capsys.readouterr().out
    assert "Rare edge case" in out  # both print DSPy's diagnostic for empty-vs-empty


def test_examples_from_dspy_docs() -> None:
    assert metrics.EM("The Eiffel Tower", ["Eiffel Tower", "Louvre"])
    assert not metrics.EM("paris", ["Paris, France"])
    assert round(metrics.F1("Eiffel Tower is in Paris", ["Paris"]), 2) == 0.33
    assert metrics.HotPotF1("yes", ["no"]) == 0.0
    assert metrics.normalize_text("The,  Eiffel  Tower!") == "eiffel tower"
    ex = dspex.Example(answer=["Eiffel Tower", "Louvre"])
    assert metrics.answer_exact_match(ex, dspex.Prediction(answer="The Eiffel Tower"), frac=0.5)
    assert metrics.answer_passage_match(
        dspex.Example(answer="Eiffel Tower"),
        dspex.Prediction(context=["The Eiffel Tower is in Paris."]),
    )


def test_bad_inputs_raise_value_error() -> None:
    with pytest.raises(ValueError, match="must be a list"):
        metrics.EM("x", "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Invalid answer type"):
        metrics.answer_exact_match(dspex.Example(answer=3), dspex.Prediction(answer="3"))


def test_normalize_text_matches_dspy_on_random_text() -> None:
    """Every ASCII punctuation mark dropped, nothing else (Unicode punctuation, accents
    split off by NFD, separators kept), as DSPy's per-character filter does."""
    pytest.importorskip("dspy")
    import random
    import string

    from dspy.evaluate import metrics as theirs

    rng = random.Random(14)
    alphabet = string.printable + "éÉßçñ—–“”‘’…«»Åﬁǅω\u0301\u00a0\u2028¿¡·"
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        assert metrics.normalize_text(text) == theirs.normalize_text(text), text
