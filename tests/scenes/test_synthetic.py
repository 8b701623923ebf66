from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evaluation.scoring import controlled_metrics, reference_correct, score_all
from readers.datasets import load_dataset
from scenes.synthetic import RELATIONS, generate, mean_colour_image, plan, round_n

REPO = Path(__file__).resolve().parents[2]


def _records(json_path: Path) -> list[dict]:
    return json.loads(json_path.read_text())


def _rel(rec: dict) -> str:
    stem = Path(rec["image_path"]).stem
    return "_".join(stem.split("_")[1:-1])


def test_round_n():
    assert [round_n(k) for k in (1, 4, 5, 6, 7, 8, 10, 199, 200, 202)] == [4, 4, 4, 8, 8, 8, 12, 200, 200, 204]
    with pytest.raises(ValueError):
        round_n(0)


def test_balance(synthetic_small):
    recs = _records(synthetic_small)
    assert len(recs) == 48
    counts = Counter(_rel(r) for r in recs)
    assert counts == {r: 12 for r in RELATIONS}
    groups: dict[tuple, list[str]] = defaultdict(list)
    for r in recs:
        stem = Path(r["image_path"]).stem.split("_")
        groups[(stem[0], stem[-1])].append(_rel(r))
    assert len(groups) == 12
    assert all(sorted(v) == sorted(RELATIONS) for v in groups.values())
    # The JSON is shuffled: a group's four items are not one contiguous block.
    pos: dict[tuple, list[int]] = defaultdict(list)
    for k, r in enumerate(recs):
        stem = Path(r["image_path"]).stem.split("_")
        pos[(stem[0], stem[-1])].append(k)
    assert sum(max(p) - min(p) > 3 for p in pos.values()) >= 6


def test_records_and_files(synthetic_small):
    out = synthetic_small.parent
    recs = _records(synthetic_small)
    names = set()
    for r in recs:
        assert set(r) >= {"image_path", "caption_options", "boxes", "blank_image_path"}
        img = out / r["image_path"]
        blank = out / r["blank_image_path"]
        assert img.is_file() and blank.is_file()
        assert r["image_path"].startswith("images/") and r["blank_image_path"].startswith("blank/")
        names.add(img.name)
        a, b = r["objects"]["A"], r["objects"]["B"]
        rel = _rel(r)
        phrase = {"on": "on", "under": "under", "left_of": "to the left of", "right_of": "to the right of"}[rel]
        assert r["caption_options"][0].lower().endswith(f"{a} {phrase} a {b}".lower()) or \
            r["caption_options"][0].lower().endswith(f"{a} {phrase} an {b}".lower())
        assert len(set(r["caption_options"])) == 4
        assert a.split()[0] != b.split()[0] and a.split()[1] != b.split()[1]
    assert len(names) == 48
    assert len(list((out / "images").iterdir())) == 48 and len(list((out / "blank").iterdir())) == 48


def test_boxes_match_relation(synthetic_small):
    for r in _records(synthetic_small):
        (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = r["boxes"]["A"], r["boxes"]["B"]
        for x0, y0, x1, y1 in (r["boxes"]["A"], r["boxes"]["B"]):
            assert 0 <= x0 < x1 <= 96 and 0 <= y0 < y1 <= 96
        acx, acy, bcx, bcy = (ax0 + ax1) / 2, (ay0 + ay1) / 2, (bx0 + bx1) / 2, (by0 + by1) / 2
        rel = _rel(r)
        if rel == "left_of":
            assert acx < bcx and ax1 < bx0
            assert ay0 < by1 and by0 < ay1  # vertical spans overlap
        elif rel == "right_of":
            assert acx > bcx and ax0 > bx1
            assert ay0 < by1 and by0 < ay1
        elif rel == "on":
            assert acy < bcy and ay1 == by0  # resting on B: touching
            assert bx0 <= ax0 and ax1 <= bx1
        elif rel == "under":
            assert acy > bcy and ay0 > by1
            assert bx0 <= ax0 and ax1 <= bx1
        else:
            pytest.fail(rel)


def test_pixels_inside_boxes(synthetic_small):
    """Drawn pixels lie inside the boxes, and the boxes are tight (within 1 px)."""
    out = synthetic_small.parent
    for r in _records(synthetic_small)[:16]:
        arr = np.asarray(Image.open(out / r["image_path"]).convert("RGB")).astype(int)
        bg = arr[0, 0]
        drawn = np.abs(arr - bg).sum(axis=2) > 0
        inside = np.zeros_like(drawn)
        for x0, y0, x1, y1 in r["boxes"].values():
            inside[y0:y1, x0:x1] = True
        assert not (drawn & ~inside).any()
        for x0, y0, x1, y1 in r["boxes"].values():
            ys, xs = np.nonzero(drawn[y0:y1, x0:x1])
            assert xs.min() <= 1 and ys.min() <= 1
            assert xs.max() >= x1 - x0 - 2 and ys.max() >= y1 - y0 - 2


def test_blank_is_mean_colour(synthetic_small):
    out = synthetic_small.parent
    r = _records(synthetic_small)[0]
    img = Image.open(out / r["image_path"]).convert("RGB")
    blank = Image.open(out / r["blank_image_path"]).convert("RGB")
    assert blank.size == img.size
    colours = blank.getcolors()
    assert colours is not None and len(colours) == 1
    mean = np.asarray(img).reshape(-1, 3).mean(axis=0)
    assert np.all(np.abs(np.array(colours[0][1]) - mean) <= 0.5 + 1e-9)
    assert mean_colour_image(img).tobytes() == blank.tobytes()


def test_determinism(tmp_path):
    p1 = generate(tmp_path / "a", n=24, seed=7, size=80)
    p2 = generate(tmp_path / "b", n=24, seed=7, size=80)
    p3 = generate(tmp_path / "c", n=24, seed=8, size=80)
    assert p1.read_bytes() == p2.read_bytes()
    for sub in ("images", "blank"):
        f1 = sorted((tmp_path / "a" / sub).iterdir())
        f2 = sorted((tmp_path / "b" / sub).iterdir())
        assert [f.name for f in f1] == [f.name for f in f2]
        assert all(x.read_bytes() == y.read_bytes() for x, y in zip(f1, f2))
    assert p1.read_bytes() != p3.read_bytes()


def test_n_rounding_and_limits(tmp_path):
    assert len(_records(generate(tmp_path / "r", n=10, seed=0, size=64))) == 12
    with pytest.raises(ValueError):
        plan(10**6, 0, 336)
    with pytest.raises(ValueError):
        plan(8, 0, 32)


def test_reader_accepts_synthetic(synthetic_small):
    rep = load_dataset(synthetic_small.parent)
    assert rep.ok and rep.subset == "Controlled_Synthetic" and len(rep.items) == 48
    it = rep.items[0]
    assert it.boxes is not None and set(it.boxes) == {"A", "B"}
    assert it.blank_image_path is not None and it.blank_image_path.is_file()
    assert it.options == ("left", "right", "on", "under")
    a, b = _records(synthetic_small)[0]["objects"].values()
    assert it.question == f"Where is the {a} in relation to the {b}? Answer with left, right, on or under."


def test_oracle_and_constant_answerers(synthetic_small):
    items = load_dataset(synthetic_small).items
    oracle = score_all(items, [f"{it.gold.capitalize()}." for it in items])
    m = controlled_metrics(items, oracle)
    assert (m.accuracy, m.pair_accuracy, m.set_accuracy) == (100.0, 100.0, 100.0)

    const = [reference_correct("Left", it.gold) for it in items]
    m = controlled_metrics(items, const)
    assert (m.accuracy, m.pair_accuracy, m.set_accuracy) == (25.0, 0.0, 0.0)

    # A "relation-blind" answerer that gets left/right right but never on/under.
    lr = [it.gold in ("left", "right") for it in items]
    m = controlled_metrics(items, lr)
    assert (m.accuracy, m.pair_accuracy, m.set_accuracy) == (50.0, 50.0, 0.0)


def test_cli(tmp_path):
    out = tmp_path / "cli"
    res = subprocess.run([sys.executable, "-m", "scenes", str(out), "--n", "9", "--seed", "1",
                          "--size", "64"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert Path(res.stdout.strip()) == out / "controlled_synthetic.json"
    assert len(_records(out / "controlled_synthetic.json")) == 8
    bad = subprocess.run([sys.executable, "-m", "scenes", str(out), "--n", "0"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "positive" in bad.stderr


def test_reader_carries_kind_and_familiar(tmp_path):
    """A mixed set: shapes (no prior) and things (familiar or not) reach the items."""
    path = generate(tmp_path / "mixed", n=16, seed=3, size=64)
    recs = _records(path)
    rep = load_dataset(path)
    assert rep.ok and len(rep.items) == 16
    for r, it in zip(recs, rep.items):
        assert (it.kind, it.familiar) == (r["kind"], r["familiar"])
    assert Counter(it.kind for it in rep.items) == {"shape": 8, "thing": 8}
    assert all(it.familiar is None for it in rep.items if it.kind == "shape")
    things = [it for it in rep.items if it.kind == "thing"]
    assert Counter(it.familiar for it in things) == {True: 2, False: 6}   # one relation of four per pair
    assert all(it.relation in ("on", "under") for it in things if it.familiar)
