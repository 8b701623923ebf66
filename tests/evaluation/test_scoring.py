from __future__ import annotations

from pathlib import Path

import pytest

from readers.items import Item
from evaluation.scoring import (
    accuracy, controlled_metrics, options_found, per_relation_accuracy, reference_correct,
    reference_vsr_correct, score_all, score_item, strict_correct, summarize, vsr_metrics,
)

A_OPTS = ("left", "right", "on", "under")
B_OPTS = ("left", "right", "front", "behind")


# ------------------------------------------------------------- reference rule


@pytest.mark.parametrize("text,gold,expected", [
    ("On", "on", True),
    ("on the table", "on", True),
    ("ON", "on", True),
    ("Left.", "left", True),
    ("LEFT", "left", True),
    ("The mug is to the left of the table.", "left", True),
    ("right", "left", False),
    ("", "left", False),
    # "on" is a substring of "front": the reference excludes that case explicitly ...
    ("In front of the table", "on", False),
    ("FRONT", "on", False),
    ("It is on the front side", "on", False),
    # ... but not the other words containing "on" (faithful quirk).
    ("horizontal", "on", True),
    ("none of them", "on", True),
    ("Under the table", "under", True),
    ("understand", "under", True),
    ("Left, not right", "left", True),
    ("Left, not right", "right", True),
    ("front", "front", True),
    ("In front of", "front", True),
])
def test_reference_correct(text, gold, expected):
    assert reference_correct(text, gold) is expected


@pytest.mark.parametrize("text,gold,expected", [
    ("On", "on", True),
    ("on the table", "on", True),
    ("horizontal", "on", False),
    ("none of them", "on", False),
    ("understand", "under", False),
    ("Under.", "under", True),
    ("in-front", "front", True),
    ("frontal", "front", False),
    ("It is on the front side", "on", False),  # front exception kept in strict mode
    ("LEFT", "left", True),
])
def test_reference_correct_strict(text, gold, expected):
    assert reference_correct(text, gold, strict=True) is expected


def test_reference_correct_is_case_insensitive_for_capitalised_gold():
    # The reference prompt files hold "On", "Left": the test lower-cases both sides.
    assert reference_correct("on the chair", "On") is True
    assert reference_correct("in front", "On") is False


# --------------------------------------------------------------- strict rule


@pytest.mark.parametrize("text,gold,options,expected", [
    ("Left", "left", A_OPTS, True),
    ("left.", "left", A_OPTS, True),
    ("Left. Left!", "left", A_OPTS, True),
    ("left or right", "left", A_OPTS, False),         # two options present
    ("Left, not right", "left", A_OPTS, False),
    ("The mug is on the left", "left", A_OPTS, False),  # "on" and "left" both present
    ("right", "left", A_OPTS, False),
    ("horizontal", "on", A_OPTS, False),                   # no whole-word option
    ("", "on", A_OPTS, False),
    ("Behind", "behind", B_OPTS, True),
    ("in front", "front", B_OPTS, True),
    ("frontal", "front", B_OPTS, False),
    ("Yes", "yes", ("yes", "no"), True),
    ("Yes and no", "yes", ("yes", "no"), False),
    ("Nope", "no", ("yes", "no"), False),
])
def test_strict_correct(text, gold, options, expected):
    assert strict_correct(text, gold, options) is expected


def test_options_found_order_and_dedup():
    assert options_found("right, left, right", A_OPTS) == ["left", "right"]


# ------------------------------------------------------------------ VSR rule


@pytest.mark.parametrize("text,gold,expected", [
    ("Yes", "yes", True),
    ("Yes, it is.", "yes", True),
    ("yes", "yes", False),        # reference is case-sensitive
    ("No", "no", True),
    ("no", "no", False),
    ("Not really", "no", True),   # "No" substring of "Not" (faithful quirk)
    ("No", "yes", False),
    ("Yes", "no", False),
])
def test_reference_vsr_correct(text, gold, expected):
    assert reference_vsr_correct(text, gold) is expected


def test_reference_vsr_correct_rejects_bad_gold():
    with pytest.raises(ValueError):
        reference_vsr_correct("Yes", "left")


def _item(i, gold, group=None, subset="Controlled_Images_A", options=A_OPTS):
    return Item(id=str(i), image_path=Path("x.png"), question="q", options=options, gold=gold,
                subset=subset, group=group, relation=gold, boxes=None, source=f"f:{i}")


def test_score_item_modes():
    vsr = _item(0, "yes", subset="VSR", options=("yes", "no"))
    assert score_item(vsr, "Yes") and not score_item(vsr, "yes")
    assert score_item(vsr, "yes", mode="reference-strict")
    assert score_item(vsr, "yes", mode="strict")
    on = _item(1, "on")
    assert score_item(on, "horizontal") and not score_item(on, "horizontal", mode="reference-strict")
    assert not score_item(on, "on the left", mode="strict")
    with pytest.raises(ValueError):
        score_item(on, "on", mode="bogus")
    assert score_all([on, vsr], {"1": "On", "0": "No"}) == [True, False]
    assert score_all([on, vsr], ["On", "Yes"]) == [True, True]
    with pytest.raises(ValueError):
        score_all([on], ["a", "b"])


def test_item_rejects_gold_outside_options():
    with pytest.raises(ValueError):
        _item(0, "above")


# ------------------------------------------------------------------- metrics


def test_accuracy():
    assert accuracy([True, False, True, True]) == 75.0
    assert accuracy([]) == 0.0


def test_controlled_metrics_by_hand():
    rels = ["left", "right", "on", "under"]
    items = [_item(f"g1{r}", r, "g1") for r in rels] + [_item(f"g2{r}", r, "g2") for r in rels]
    correct = [True, True, True, True,   # g1: 2 pairs, 1 set
               True, False, True, True]  # g2: on/under pair only
    m = controlled_metrics(items, correct)
    assert m.accuracy == pytest.approx(87.5)
    assert m.pairs_correct == 3 and m.pair_accuracy == pytest.approx(75.0)
    assert m.sets_correct == 1 and m.set_accuracy == pytest.approx(50.0)
    assert m.n_groups == 2

    # Set B pairs are left/right and front/behind.
    rels_b = ["left", "right", "front", "behind"]
    items_b = [_item(r, r, "g", subset="Controlled_Images_B", options=B_OPTS) for r in rels_b]
    m = controlled_metrics(items_b, [False, False, True, True])
    assert (m.pairs_correct, m.sets_correct) == (1, 0)
    assert m.pair_accuracy == pytest.approx(50.0)

    # Incomplete group: a lone correct "left" makes no pair and no set.
    m = controlled_metrics([_item(0, "left", "g")], [True])
    assert (m.accuracy, m.pairs_correct, m.sets_correct) == (100.0, 0, 0)

    with pytest.raises(ValueError):
        controlled_metrics([_item(0, "left")], [True])  # no group
    with pytest.raises(ValueError):
        controlled_metrics(items, [True])


def test_controlled_metrics_duplicate_relation_needs_all_copies():
    items = [_item(0, "left", "g"), _item(1, "left", "g"), _item(2, "right", "g")]
    assert controlled_metrics(items, [True, False, True]).pairs_correct == 0
    assert controlled_metrics(items, [True, True, True]).pairs_correct == 1


def test_vsr_metrics_by_hand():
    golds = ["yes", "yes", "yes", "no", "no"]
    correct = [True, True, False, True, False]
    m = vsr_metrics(golds, correct)
    assert (m.tp, m.fn, m.tn, m.fp) == (2, 1, 1, 1)
    assert m.accuracy == pytest.approx(60.0)
    assert m.precision == pytest.approx(200 / 3)
    assert m.recall == pytest.approx(200 / 3)
    assert m.f1 == pytest.approx(400 / 6)
    assert m.reference_f1 == pytest.approx(400 / 7)  # harmonic mean of TPR 2/3 and TNR 1/2
    always_no = vsr_metrics(golds, [False, False, False, True, True])
    assert always_no.f1 == 0.0 and always_no.accuracy == pytest.approx(40.0)
    with pytest.raises(ValueError):
        vsr_metrics(["maybe"], [True])


def test_summarize_and_per_relation():
    items = [_item(r, r, "g") for r in ("left", "right", "on", "under")]
    s = summarize(items, [True, True, False, True])
    assert s["accuracy"] == 75.0 and s["pair_accuracy"] == 50.0 and s["set_accuracy"] == 0.0
    vsr = [_item(0, "yes", subset="VSR", options=("yes", "no")), _item(1, "no", subset="VSR", options=("yes", "no"))]
    s = summarize(vsr, [True, False])
    assert s["f1"] == pytest.approx(200 / 3) and "pair_accuracy" not in s
    assert per_relation_accuracy(items, [True, True, False, True]) == {
        "left": 100.0, "on": 0.0, "right": 100.0, "under": 100.0}
