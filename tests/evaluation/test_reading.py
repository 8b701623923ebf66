"""The reading kinds of the procedural benchmark: scenes, questions, strict scoring, the calibration read-off."""
from __future__ import annotations

from collections import Counter

import pytest

from evaluation.reading import adaptvis_correct, calibrate, summarize
from scenes.reading_scenes import (INVERSE, PRIOR_SHARE, READING_KINDS, SCENE_KINDS, _apart, reading_set, relation_word_only, score_reading,
                                   training_item)
from scenes.synthetic import RELATIONS
from scenes.things import PRIOR_PAIRS


PRIOR_KINDS = ("prior_familiar", "prior_unfamiliar")


@pytest.mark.parametrize("kind", [k for k in READING_KINDS if k not in PRIOR_KINDS])
def test_every_kind_is_balanced_and_deterministic(kind):
    items = reading_set(kind, 16, 5, 200)
    assert len(items) == 16
    assert Counter(s.relation for s, _ in items) == {r: 4 for r in RELATIONS}
    again = reading_set(kind, 16, 5, 200)
    assert [(s, q) for s, q in items] == [(s, q) for s, q in again]
    assert reading_set(kind, 16, 6, 200) != items


def test_the_prior_kinds_ask_prior_pairs_in_and_against_their_familiar_relation():
    familiar, unfamiliar = reading_set("prior_familiar", 12, 5, 200), reading_set("prior_unfamiliar", 12, 5, 200)
    for s, q in familiar + unfamiliar:
        assert (s.objects[0].shape, s.objects[1].shape) in PRIOR_PAIRS and s.objects[0].colour != s.objects[1].colour
        assert q.form == "whatsup" and q.asked == s.relation_of(q.subject, q.reference)
    assert {s.relation for s, _ in familiar} == {"on"}
    assert Counter(s.relation for s, _ in unfamiliar) == {"under": 4, "left_of": 4, "right_of": 4}
    assert Counter(q.subject for _, q in familiar) == {0: 6, 1: 6}       # "cup ... table" and "table ... cup"
    assert reading_set("prior_unfamiliar", 12, 5, 200) == unfamiliar


def test_training_shows_prior_pairs_mostly_in_their_familiar_relation():
    prior = [s for s, _ in (training_item(1000 + i, 160) for i in range(1500)) if s.kind == "prior"]
    share = sum(s.relation == "on" for s in prior) / len(prior)
    assert len(prior) > 100 and abs(share - PRIOR_SHARE) < 0.05


def test_reversed_asks_the_standard_scenes_with_the_names_swapped():
    std, rev = reading_set("standard", 8, 3, 200), reading_set("reversed", 8, 3, 200)
    for (s1, q1), (s2, q2) in zip(std, rev):
        assert s1 == s2 and (q1.subject, q2.subject) == (0, 1)
        a, b = s1.objects[0].name, s1.objects[1].name
        assert q1.text.startswith(f"Where is the {a} in relation to the {b}?")
        assert q2.text.startswith(f"Where is the {b} in relation to the {a}?")
        assert q2.asked == INVERSE[q1.asked]
        w1, w2 = s1.boxes[0][2] - s1.boxes[0][0], s1.boxes[1][2] - s1.boxes[1][0]
        assert s1.objects[0].is_thing or w1 < w2          # the standard subject is the smaller shape


def test_minimal_pairs_and_distractors():
    for s, _ in reading_set("colour_only", 12, 1, 200):
        a, b = s.objects
        assert a.shape == b.shape and a.colour != b.colour
    for s, _ in reading_set("shape_only", 12, 1, 200):
        a, b = s.objects
        assert a.colour == b.colour and a.shape != b.shape
    for s, q in reading_set("distractor", 12, 1, 200):
        assert len(s.objects) == 3 and len({o.name for o in s.objects}) == 3
        assert all(_apart(s.boxes[2], box, 2) for box in s.boxes[:2])   # in no relation to either
        assert all(0 <= v <= 200 for box in s.boxes for v in box)
        assert q.subject in (0, 1) and q.reference in (0, 1)


def test_question_forms():
    yn = reading_set("yes_no", 40, 2, 200)
    assert Counter(q.answer for _, q in yn) == {"Yes": 20, "No": 20}
    for s, q in yn:
        truth = s.relation_of(q.subject, q.reference)
        assert q.text.endswith("Answer yes or no.") and (q.answer == "Yes") == (q.asked == truth)
    for s, q in reading_set("free", 8, 2, 200):
        assert q.text.endswith("?") and "Answer" not in q.text
    for s, q in reading_set("what", 8, 2, 200):
        assert q.text.startswith("What is ") and q.answer.lower() == s.objects[q.subject].name


def test_strict_scoring():
    (s, q), = [x for x in reading_set("distractor", 8, 4, 200) if x[1].answer == "Left"][:1]
    assert score_reading(q, s, "Left") and score_reading(q, s, "left.")
    assert not score_reading(q, s, "Left or right") and not score_reading(q, s, "Right")
    assert not score_reading(q, s, q.text)                   # an echo names every option
    (s, q), = reading_set("what", 1, 4, 200)
    subject, other = s.objects[q.subject].name, s.objects[q.reference].name
    assert score_reading(q, s, subject.capitalize()) and not score_reading(q, s, f"{subject} and {other}")
    assert relation_word_only("Under") and relation_word_only("It is left.")
    assert not relation_word_only("Where is the red circle in relation to the blue square?")


def test_training_items_cover_every_form_and_kind():
    items = [training_item(1000 + i, 160) for i in range(200)]
    assert {q.form for _, q in items} == {"whatsup", "free", "yes_no", "what"}
    assert {s.kind for s, _ in items} == set(SCENE_KINDS) == {"standard", "similar", "colour_only", "shape_only", "distractor", "prior"}
    assert {q.subject for _, q in items} == {0, 1}


def test_calibration_reads_adaptvis_off_the_alpha_answers():
    def rec(conf, right_at):
        return {"set": "standard", "confidence": conf, "answers": {},
                "correct": {k: k in right_at for k in ("1.0", "0.5", "0.8", "1.2", "1.5", "2.0")}}
    # confident items are right when sharpened, unsure ones when smoothed
    dev = [rec(0.9, {"1.0", "1.5", "2.0", "1.2"})] * 4 + [rec(0.3, {"0.5"})] * 4
    cal = calibrate(dev)
    assert cal["dev_baseline"] == 0.5 and cal["dev_adaptvis"] == 1.0
    low, high, t = cal["adaptvis"]
    assert low == 0.5 and 0.3 < t <= 0.9
    assert adaptvis_correct(dev[-1], low, high, t)
    rows = summarize(dev, cal["scalingvis_alpha"], cal["adaptvis"])
    assert rows["standard"]["baseline"] == 50.0 and rows["standard"]["adaptvis"] == 100.0


def test_cli_writes_a_reading_kind(tmp_path):
    import json

    from scenes.__main__ import main

    assert main([str(tmp_path), "--reading", "distractor", "--n", "4", "--seed", "3", "--size", "128"]) == 0
    records = json.loads((tmp_path / "reading.json").read_text())
    assert len(records) == 4 and all(len(r["objects"]) == 3 for r in records)
    assert all((tmp_path / r["image_path"]).is_file() and (tmp_path / r["blank_image_path"]).is_file() for r in records)
