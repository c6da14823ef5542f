"""Answer metrics with DSPy's normalization: exact match, token F1, HotPotQA F1, passage match.

Every function gives the same value as its ``dspy.evaluate.metrics`` namesake (the parity tests
compare them on a shared corpus).
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from typing import Any

__all__ = [
    "EM",
    "F1",
    "HotPotF1",
    "answer_exact_match",
    "answer_passage_match",
    "em_score",
    "f1_score",
    "hotpot_f1_score",
    "normalize_text",
    "precision_score",
]

_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_SPECIAL = ("yes", "no", "noanswer")


def normalize_text(s: str) -> str:
    """NFD, lowercase, drop punctuation, drop English articles, collapse whitespace."""
    s = unicodedata.normalize("NFD", s).lower()
    s = s.translate(_NO_PUNCTUATION)  # what DSPy's per-character filter keeps, in C
    return " ".join(_ARTICLES.sub(" ", s).split())


def _check_list(answers_list: Any) -> None:
    if not isinstance(answers_list, list):
        raise ValueError(f"`answers_list` must be a list, got {type(answers_list)}")


def em_score(prediction: str, ground_truth: str) -> bool:
    """Whether the two strings are equal after :func:`normalize_text`."""
    return normalize_text(prediction) == normalize_text(ground_truth)


def _overlap(pred_tokens: list[str], truth_tokens: list[str]) -> int:
    return sum((Counter(pred_tokens) & Counter(truth_tokens)).values())


def _edge_case_note(kind: str, pred_tokens: list[str], truth_tokens: list[str]) -> None:
    if not pred_tokens and not truth_tokens:
        # DSPy prints this diagnostic and keeps the score at 0
        print(
            f"\n#> {kind} Metric: Rare edge case of len(prediction_tokens) == "
            "len(ground_truth_tokens) == 0.\n"
        )


def _f1_tokens(pred_tokens: list[str], truth_tokens: list[str]) -> float:
    same = _overlap(pred_tokens, truth_tokens)
    if same == 0:
        return 0
    precision = same / len(pred_tokens)
    recall = same / len(truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def f1_score(prediction: str, ground_truth: str) -> float:
    """Token-level F1 after normalization (0 when nothing overlaps)."""
    pred_tokens = normalize_text(prediction).split()
    truth_tokens = normalize_text(ground_truth).split()
    _edge_case_note("F1", pred_tokens, truth_tokens)
    return _f1_tokens(pred_tokens, truth_tokens)


def hotpot_f1_score(prediction: str, ground_truth: str) -> float:
    """Like :func:`f1_score`, but a yes/no/noanswer label must match exactly."""
    pred = normalize_text(prediction)
    truth = normalize_text(ground_truth)
    if pred != truth and (pred in _SPECIAL or truth in _SPECIAL):
        return 0
    return _f1_tokens(pred.split(), truth.split())


def precision_score(prediction: str, ground_truth: str) -> float:
    """Token precision of ``prediction`` against ``ground_truth`` after normalization."""
    pred_tokens = normalize_text(prediction).split()
    truth_tokens = normalize_text(ground_truth).split()
    _edge_case_note("Precision", pred_tokens, truth_tokens)
    same = _overlap(pred_tokens, truth_tokens)
    return 0 if same == 0 else same / len(pred_tokens)


def EM(prediction: str, answers_list: list[str]) -> bool:
    """Whether any reference equals ``prediction`` after normalization."""
    _check_list(answers_list)
    return max(em_score(prediction, ans) for ans in answers_list)


def F1(prediction: str, answers_list: list[str]) -> float:
    """The best token F1 of ``prediction`` over the references."""
    _check_list(answers_list)
    return max(f1_score(prediction, ans) for ans in answers_list)


def HotPotF1(prediction: str, answers_list: list[str]) -> float:
    """The best HotPotQA-style F1 of ``prediction`` over the references."""
    _check_list(answers_list)
    return max(hotpot_f1_score(prediction, ans) for ans in answers_list)


# ---------------------------------------------------------------------- passage match
# DPR's simple tokenizer: a maximal run of letters/digits/marks, or any other single
# character that is neither a separator (Z*) nor a control/format/unassigned one (C*).


def _is_alnum(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "LNM"


def _is_visible(ch: str) -> bool:
    return unicodedata.category(ch)[0] not in "ZC"


def dpr_normalize(text: str) -> list[str]:
    """DPR's tokenization (NFD, lowercased words), as ``dspy.dsp.utils.DPR_normalize``."""
    text = unicodedata.normalize("NFD", text)
    tokens: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if _is_alnum(text[i]):
            j = i + 1
            while j < n and _is_alnum(text[j]):
                j += 1
            tokens.append(text[i:j].lower())
            i = j
            continue
        if _is_visible(text[i]):
            tokens.append(text[i].lower())
        i += 1
    return tokens


def _has_answer(tokenized_answers: list[list[str]], text: str) -> bool:
    words = dpr_normalize(text)
    for answer in tokenized_answers:
        width = len(answer)
        if any(words[i : i + width] == answer for i in range(len(words) - width + 1)):
            return True
    return False


def _passage_match(passages: list[str], answers: list[str]) -> bool:
    tokenized = [dpr_normalize(normalize_text(ans)) for ans in answers]
    return any(_has_answer(tokenized, normalize_text(psg)) for psg in passages)


def _answer_match(prediction: str, answers: list[str], frac: float = 1.0) -> bool:
    if frac >= 1.0:
        return EM(prediction, answers)
    return F1(prediction, answers) >= frac


def _references(example: Any) -> list[str]:
    answer = example.answer
    if isinstance(answer, str):
        return [answer]
    if isinstance(answer, list):
        return answer
    raise ValueError(f"Invalid answer type: {type(answer)}")


def answer_exact_match(example: Any, pred: Any, trace: Any = None, frac: float = 1.0) -> bool:
    """``pred.answer`` matches ``example.answer`` (a string or a list of references):
    exactly after normalization when ``frac >= 1``, else by token F1 ``>= frac``."""
    references = _references(example)
    return _answer_match(pred.answer, references, frac=frac)


def answer_passage_match(example: Any, pred: Any, trace: Any = None) -> bool:
    """Any passage in ``pred.context`` contains any reference answer (DPR tokenization)."""
    references = _references(example)
    return _passage_match(pred.context, references)
