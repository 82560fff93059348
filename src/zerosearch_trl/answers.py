"""Answer normalisation and matching: the one scorer that rewards, engines and evaluation share.

SQuAD normalisation (lower-case, no punctuation, no articles, collapsed whitespace), then token F1, strict exact
match and cover EM (a gold answer contained, as whole words, in the prediction), each the best over the gold
answers. A gold answer that normalises to nothing (``"---"``) matches no prediction, not even an empty one. This
module sits at the bottom of the package and imports nothing from it.

Example:
    >>> f1_score("the Eiffel Tower", ["Eiffel Tower"]), cover_exact_match("in Paris, France", "Paris")
    (1.0, 1.0)
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)
# HotpotQA's rule: a yes/no/noanswer prediction only scores F1 if it equals the gold exactly.
_SPECIAL = {"yes", "no", "noanswer"}


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower-case, drop punctuation and the articles a/an/the, collapse whitespace.

    Example:
        >>> normalize_answer("The  Eiffel-Tower!")
        'eiffeltower'
    """
    text = "".join(ch for ch in str(text).lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def as_gold_list(golds: Any) -> list[str]:
    """Normalise a gold-answer cell (a string, a list, an array, or ``None``) to a list of strings."""
    if golds is None:
        return []
    if isinstance(golds, str):
        return [golds]
    if isinstance(golds, dict):  # Search-R1's {"target": [...]}, SQuAD's {"text": [...]}
        return as_gold_list(golds.get("target", golds.get("text")))
    if isinstance(golds, Iterable):
        return [str(g) for g in golds if g is not None]
    return [str(golds)]


def _f1_single(prediction: str, gold: str) -> float:
    pred, ref = normalize_answer(prediction), normalize_answer(gold)
    if (pred in _SPECIAL or ref in _SPECIAL) and pred != ref:
        return 0.0
    pred_tokens, ref_tokens = pred.split(), ref.split()
    common = sum((Counter(pred_tokens) & Counter(ref_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str | None, golds: str | Sequence[str]) -> float:
    """Token F1 after normalisation, best over the gold answers; 0 for a missing prediction.

    Example:
        >>> round(f1_score("Barack Obama", ["Obama"]), 3)
        0.667
    """
    if prediction is None:
        return 0.0
    return max((_f1_single(prediction, g) for g in as_gold_list(golds)), default=0.0)


def exact_match(prediction: str | None, golds: str | Sequence[str]) -> float:
    """Strict exact match after normalisation (1.0 or 0.0), best over the gold answers.

    Example:
        >>> exact_match("the Beatles", ["Beatles"]), exact_match("The Beatles band", ["Beatles"])
        (1.0, 0.0)
    """
    if prediction is None:
        return 0.0
    pred = normalize_answer(prediction)
    # A gold that normalises to nothing ("---") would match every empty prediction: it matches nothing.
    return float(any((g := normalize_answer(gold)) and pred == g for gold in as_gold_list(golds)))


def cover_exact_match(prediction: str | None, golds: str | Sequence[str]) -> float:
    """Cover EM: 1.0 if a normalised gold answer appears, as whole words, inside the normalised prediction.

    This is what the paper's code called "EM" (substring containment); it is more lenient than
    :func:`exact_match`, so report it under its own name.

    Example:
        >>> cover_exact_match("The Beatles band", ["Beatles"])
        1.0
    """
    if prediction is None:
        return 0.0
    pred = f" {normalize_answer(prediction)} "
    return float(any((g := normalize_answer(gold)) and f" {g} " in pred for gold in as_gold_list(golds)))
