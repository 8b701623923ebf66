"""Is a generated answer right, and what do the answers add up to.

Per-answer rules
----------------
:func:`reference_correct` is the WhatsUp rule of the AdaptVis reference code
(``model_zoo/llava15.py``, ``get_out_scores_wh_batched``), line for line::

    (gold in gen or gold.lower() in gen.lower())
        and not (gold.lower() == "on" and "front" in gen.strip().lower())

i.e. a case-insensitive *substring* test.  Consequences, kept on purpose for faithful
numbers: gold ``"on"`` is found inside ``"front"`` (hence the special case), but also
inside ``"horizontal"``, ``"one"``, ``"none"``, ``"ontop"``, ``"long"``...; gold ``"left"``
is right for ``"Left, not right"`` too (no negation handling, first-option bias).
``strict=True`` replaces the substring test by a whole-word test (``\\bgold\\b``,
case-insensitive); the ``on``/``front`` exception is kept in both modes.

:func:`reference_vsr_correct` is the reference VSR rule
(``get_judge_scores_vsr_batched``): label 1 is right iff ``"Yes"`` occurs in the text,
label 0 iff ``"No"`` occurs -- *case-sensitive* substrings (``"no"`` or ``"yes"`` in
lower case do not count; ``"Not"`` / ``"Nobody"`` count as ``"No"``).

:func:`strict_correct`: exactly one distinct option word occurs in the text (whole
words, case-insensitive) and it is the gold one.  ``"Left, not right"`` is wrong here.

Aggregate metrics (percentages, 0..100)
---------------------------------------
accuracy
    100 * (number correct) / N.
pair accuracy (Controlled sets), as whatsup_vlms / AdaptVis ``evaluate_scores``
    Items are grouped by ``group`` = (obj, ref) from the file name.  Within a group the
    relations form two opposite pairs: left/right and on/under (set A, synthetic) or
    left/right and front/behind (set B).  A pair counts when *both* its items are
    correct.  pair accuracy = 100 * (pairs counted) / (N / 2).
set accuracy (Controlled sets)
    A group counts when all four of its relations are present and correct.
    set accuracy = 100 * (groups counted) / (N / 4).
    The denominators are the reference's N/2 and N/4.  On the full, balanced sets
    (every group has each of its 4 relations exactly once) they equal the number of
    pairs and of groups.  On a subsample (e.g. a dev/test split that breaks groups)
    incomplete pairs/groups can only count as wrong, as in the reference; compare
    pair/set accuracy only on full sets or group-preserving splits.
    If a group holds the same relation twice, it counts as correct only if every copy
    is correct (the reference keeps whichever it saw last).
VSR (positive class = yes)
    TP: gold yes & correct, FN: gold yes & wrong, TN: gold no & correct, FP: gold no &
    wrong.  accuracy = (TP+TN)/N; precision = TP/(TP+FP); recall = TP/(TP+FN);
    F1 = 2TP/(2TP+FP+FN) (0 when undefined).  ``reference_f1`` is what the reference
    prints as "F1": the harmonic mean of TP/(TP+FN) and TN/(TN+FP) (it calls these
    precision and recall); reported too, for comparison with its logs.
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from readers.items import Item
from readers.prompts import VSR

OPPOSITE_PAIRS: tuple[tuple[str, str], ...] = (("left", "right"), ("on", "under"), ("front", "behind"))


def _word_re(word: str) -> re.Pattern:
    return re.compile(r"(?<![A-Za-z0-9])" + re.escape(word) + r"(?![A-Za-z0-9])", re.IGNORECASE)


def reference_correct(text: str, gold: str, strict: bool = False) -> bool:
    """WhatsUp reference rule (see module docstring); ``strict`` = whole-word match."""
    if strict:
        found = _word_re(gold).search(text) is not None
    else:
        found = gold in text or gold.lower() in text.lower()
    return found and not (gold.lower() == "on" and "front" in text.strip().lower())


def reference_vsr_correct(text: str, gold: str) -> bool:
    """VSR reference rule: gold ``yes`` -> ``"Yes" in text``; ``no`` -> ``"No" in text``."""
    g = gold.strip().lower()
    if g in ("yes", "1", "true"):
        return "Yes" in text
    if g in ("no", "0", "false"):
        return "No" in text
    raise ValueError(f"VSR gold must be yes or no, got {gold!r}")


def options_found(text: str, options: Iterable[str]) -> list[str]:
    """Distinct option words that occur in ``text`` as whole words (case-insensitive)."""
    return [o for o in dict.fromkeys(options) if _word_re(o).search(text)]


def strict_correct(text: str, gold: str, options: Sequence[str]) -> bool:
    """Exactly one option word occurs (whole words) and it is ``gold``."""
    found = options_found(text, options)
    return len(found) == 1 and found[0].lower() == gold.lower()


def score_item(item: Item, text: str, mode: str = "reference") -> bool:
    """Score one generation for an item.

    ``mode``: ``"reference"`` (WhatsUp substring rule, or the VSR rule for VSR items),
    ``"reference-strict"`` (whole-word WhatsUp rule, also used for VSR), ``"strict"``
    (:func:`strict_correct`)."""
    if mode == "reference":
        if item.subset == VSR:
            return reference_vsr_correct(text, item.gold)
        return reference_correct(text, item.gold)
    if mode == "reference-strict":
        return reference_correct(text, item.gold, strict=True)
    if mode == "strict":
        return strict_correct(text, item.gold, item.options)
    raise ValueError(f"unknown scoring mode {mode!r} (reference, reference-strict, strict)")


# ----------------------------------------------------------------------- metrics

def accuracy(correct: Sequence[bool]) -> float:
    """Percentage correct; 0.0 for an empty list."""
    n = len(correct)
    return 100.0 * sum(bool(c) for c in correct) / n if n else 0.0


@dataclass(frozen=True)
class ControlledMetrics:
    accuracy: float
    pair_accuracy: float
    set_accuracy: float
    n: int
    n_groups: int
    pairs_correct: int
    sets_correct: int

    def as_dict(self) -> dict:
        return dict(accuracy=self.accuracy, pair_accuracy=self.pair_accuracy, set_accuracy=self.set_accuracy,
                    n=self.n, n_groups=self.n_groups, pairs_correct=self.pairs_correct,
                    sets_correct=self.sets_correct)


def controlled_metrics(items: Sequence[Item], correct: Sequence[bool]) -> ControlledMetrics:
    """Accuracy, pair accuracy and set accuracy (definitions in the module docstring).

    Every item needs a ``group``; the relation used is the item's gold word."""
    if len(items) != len(correct):
        raise ValueError(f"{len(items)} items but {len(correct)} results")
    groups: dict[str, dict[str, bool]] = defaultdict(dict)
    for it, c in zip(items, correct):
        if it.group is None:
            raise ValueError(f"item {it.id} has no group; pair/set accuracy need a Controlled set")
        g = groups[it.group]
        g[it.gold] = g.get(it.gold, True) and bool(c)
    pairs = sum(
        1 for g in groups.values() for a, b in OPPOSITE_PAIRS if g.get(a, False) and g.get(b, False)
    )
    sets = sum(1 for g in groups.values() if len(g) == 4 and all(g.values()))
    n = len(items)
    return ControlledMetrics(
        accuracy=accuracy(correct),
        pair_accuracy=100.0 * pairs / (n / 2) if n else 0.0,
        set_accuracy=100.0 * sets / (n / 4) if n else 0.0,
        n=n,
        n_groups=len(groups),
        pairs_correct=pairs,
        sets_correct=sets,
    )


@dataclass(frozen=True)
class VSRMetrics:
    accuracy: float
    precision: float
    recall: float
    f1: float
    reference_f1: float
    tp: int
    fp: int
    tn: int
    fn: int

    def as_dict(self) -> dict:
        return dict(accuracy=self.accuracy, precision=self.precision, recall=self.recall, f1=self.f1,
                    reference_f1=self.reference_f1, tp=self.tp, fp=self.fp, tn=self.tn, fn=self.fn)


def _div(a: float, b: float) -> float:
    return a / b if b else 0.0


def vsr_metrics(golds: Sequence[str], correct: Sequence[bool]) -> VSRMetrics:
    """VSR accuracy / precision / recall / F1 with positive class ``yes`` (percentages).

    ``golds`` are ``"yes"``/``"no"`` (or items' ``gold``), ``correct`` the per-item
    verdicts.  With a yes/no answer, the predicted label follows from gold and verdict."""
    if len(golds) != len(correct):
        raise ValueError(f"{len(golds)} golds but {len(correct)} results")
    tp = fp = tn = fn = 0
    for g, c in zip(golds, correct):
        g = g.strip().lower()
        if g not in ("yes", "no"):
            raise ValueError(f"VSR gold must be yes or no, got {g!r}")
        if g == "yes":
            tp, fn = tp + bool(c), fn + (not c)
        else:
            tn, fp = tn + bool(c), fp + (not c)
    prec, rec = _div(tp, tp + fp), _div(tp, tp + fn)
    tpr, tnr = rec, _div(tn, tn + fp)
    return VSRMetrics(
        accuracy=100.0 * _div(tp + tn, tp + tn + fp + fn),
        precision=100.0 * prec,
        recall=100.0 * rec,
        f1=100.0 * _div(2 * tp, 2 * tp + fp + fn),
        reference_f1=100.0 * _div(2 * tpr * tnr, tpr + tnr),
        tp=tp, fp=fp, tn=tn, fn=fn,
    )


def summarize(items: Sequence[Item], correct: Sequence[bool]) -> dict:
    """The metrics that apply to these items: always ``accuracy`` and ``n``; pair/set
    accuracy when every item has a group; VSR metrics when every item is VSR."""
    out: dict = {"n": len(items), "accuracy": accuracy(correct)}
    if items and all(it.group is not None for it in items):
        out.update(controlled_metrics(items, correct).as_dict())
    elif items and all(it.subset == VSR for it in items):
        out.update(vsr_metrics([it.gold for it in items], correct).as_dict())
    return out


def per_relation_accuracy(items: Sequence[Item], correct: Sequence[bool]) -> dict[str, float]:
    """Accuracy by gold word (the reference's per-preposition breakdown)."""
    by: dict[str, list[bool]] = defaultdict(list)
    for it, c in zip(items, correct):
        by[it.gold].append(bool(c))
    return {k: accuracy(v) for k, v in sorted(by.items())}


def score_all(items: Sequence[Item], texts: Mapping[str, str] | Sequence[str], mode: str = "reference") -> list[bool]:
    """Verdicts for generations given as a list aligned with ``items`` or a mapping
    ``item.id -> text``."""
    if isinstance(texts, Mapping):
        return [score_item(it, texts[it.id], mode) for it in items]
    if len(texts) != len(items):
        raise ValueError(f"{len(items)} items but {len(texts)} generations")
    return [score_item(it, t, mode) for it, t in zip(items, texts)]


__all__ = [
    "OPPOSITE_PAIRS", "reference_correct", "reference_vsr_correct", "options_found", "strict_correct",
    "score_item", "score_all", "accuracy", "ControlledMetrics", "controlled_metrics", "VSRMetrics",
    "vsr_metrics", "summarize", "per_relation_accuracy",
]
