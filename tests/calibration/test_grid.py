from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from calibration.grid import (
    ALPHA_GRID, ALPHA_HIGH_GRID, ALPHA_LOW_GRID, PAPER_SETTINGS, calibrate, choose_alpha,
    constant_alpha_accuracy, default_thresholds, dev_test_split, evaluate_cell, grid_search,
)

LOW_CONF = [0.10, 0.20, 0.25, 0.30, 0.33]
HIGH_CONF = [0.45, 0.50, 0.70, 0.90, 0.95]


def _known_table():
    """Low-confidence examples are right only with alpha 0.5, confident ones only with
    alpha 1.5: the unique best cell is (0.5, 1.5, t) for 0.33 < t <= 0.45."""
    conf, table = {}, {}
    for k, c in enumerate(LOW_CONF):
        conf[f"lo{k}"] = c
        table[f"lo{k}"] = {a: a == 0.5 for a in ALPHA_GRID}
    for k, c in enumerate(HIGH_CONF):
        conf[f"hi{k}"] = c
        table[f"hi{k}"] = {a: a == 1.5 for a in ALPHA_GRID}
    return conf, table


def test_choose_alpha_rule():
    assert choose_alpha(0.39, 0.5, 1.5, 0.4) == 0.5
    assert choose_alpha(0.40, 0.5, 1.5, 0.4) == 1.5  # not strictly below -> high
    assert choose_alpha(0.9, 0.5, 1.5, 0.4) == 1.5


def test_default_thresholds():
    th = default_thresholds([0.33, 0.5, 0.123])
    assert th == sorted(th)
    assert 0.05 in th and 0.95 in th and 0.123 in th and 0.33 in th
    assert len(th) == 19 + 2  # 0.5 is already on the grid
    assert 0.35 in default_thresholds() and 0.35 == [t for t in default_thresholds() if abs(t - 0.35) < 1e-9][0]


def test_grid_finds_known_best_cell():
    conf, table = _known_table()
    r = grid_search(conf, table)
    assert (r.best.alpha_low, r.best.alpha_high) == (0.5, 1.5)
    assert r.best.accuracy == 100.0 and r.best.n_low == 5
    assert r.best.threshold == 0.45  # nearest to the default reference 0.5 in the plateau (0.33, 0.45]
    perfect = {c.threshold for c in r.cells if c.n_correct == 10}
    assert perfect == {0.35, 0.40, 0.45}
    assert all((c.alpha_low, c.alpha_high) == (0.5, 1.5) for c in r.cells if c.n_correct == 10)
    # Cells: 2 lows x 3 highs x thresholds.
    assert len(r.cells) == 2 * 3 * len(default_thresholds(conf.values()))
    assert r.accuracy_array().shape == (2, 3, len(r.thresholds))
    assert r.accuracy_array().max() == 100.0


@pytest.mark.parametrize("subset,expected", [("Controlled_Images_A", 0.40), ("Controlled_Images_B", 0.35)])
def test_tie_break_prefers_paper_threshold(subset, expected):
    conf, table = _known_table()
    r = grid_search(conf, table, subset=subset)
    assert r.reference_threshold == PAPER_SETTINGS[subset][2]
    assert r.best.threshold == expected and r.best.accuracy == 100.0


def test_tie_break_prefers_smallest_alpha_change():
    conf = {i: c for i, c in enumerate([0.1, 0.2, 0.8, 0.9])}
    # Everything is right with any alpha except 2.0 -> every (low, high<2) cell is 100 %.
    table = {i: {a: a != 2.0 for a in ALPHA_GRID} for i in conf}
    r = grid_search(conf, table)
    assert (r.best.alpha_low, r.best.alpha_high) == (0.8, 1.2)
    assert r.best.accuracy == 100.0
    # Without 1.2: (0.8, 1.5) changes alpha by 0.7, (0.5, 1.5) by 1.0.
    r = grid_search(conf, table, alpha_lows=[0.5, 0.8], alpha_highs=[1.5, 2.0])
    assert (r.best.alpha_low, r.best.alpha_high) == (0.8, 1.5)
    # Accuracy comes first: the low-confidence examples are right only with 0.5, so
    # they must be routed to alpha_low = 0.5.
    for i in (0, 1):
        table[i] = {a: a == 0.5 for a in ALPHA_GRID}
    r = grid_search(conf, table)
    assert r.best.accuracy == 100.0 and (r.best.alpha_low, r.best.alpha_high) == (0.5, 1.2)
    assert r.best.threshold == 0.5  # plateau (0.2, 0.8]: nearest to the reference 0.5


def test_grid_matches_brute_force():
    rng = random.Random(1)
    ids = [f"x{i}" for i in range(60)]
    conf = {i: round(rng.random(), 3) for i in ids}
    table = {i: {a: rng.random() < 0.5 for a in ALPHA_GRID} for i in ids}
    r = grid_search(conf, table)
    for c in r.cells:
        expect = sum(table[i][choose_alpha(conf[i], c.alpha_low, c.alpha_high, c.threshold)] for i in ids)
        assert c.n_correct == expect
        assert c.n_low == sum(conf[i] < c.threshold for i in ids)
    best = max(c.n_correct for c in r.cells)
    assert r.best.n_correct == best
    # Brute force over the same grid finds the same best accuracy.
    brute = max(
        sum(table[i][choose_alpha(conf[i], lo, hi, t)] for i in ids)
        for lo, hi, t in itertools.product(ALPHA_LOW_GRID, ALPHA_HIGH_GRID, default_thresholds(conf.values()))
    )
    assert brute == best


def test_ids_restrict_and_errors():
    conf, table = _known_table()
    r = grid_search(conf, table, ids=["hi0", "hi1"])
    assert r.best.n == 2 and r.best.accuracy == 100.0 and r.best.alpha_high == 1.5
    bad = {k: dict(v) for k, v in table.items()}
    del bad["lo0"][0.8]
    with pytest.raises(ValueError, match="alpha=0.8"):
        grid_search(conf, bad)
    with pytest.raises(ValueError):
        grid_search(conf, table, ids=[])
    with pytest.raises(ValueError):
        grid_search({**conf, "extra": 0.5}, table)
    with pytest.raises(ValueError):
        grid_search({**conf, "lo0": float("nan")}, table)


def test_round_confidence_like_reference():
    conf = {"a": 0.399}
    table = {"a": {0.5: True, 1.5: False}}
    assert evaluate_cell(conf, table, 0.5, 1.5, 0.40).n_correct == 1          # 0.399 < 0.40 -> low
    assert evaluate_cell(conf, table, 0.5, 1.5, 0.40, round_confidence=2).n_correct == 0  # 0.40 -> high


def test_constant_alpha_accuracy():
    conf, table = _known_table()
    acc = constant_alpha_accuracy(table)
    assert acc == {0.5: 50.0, 0.8: 0.0, 1.2: 0.0, 1.5: 50.0, 2.0: 0.0}


def test_dev_test_split():
    ids = [f"i{k}" for k in range(103)]
    dev, test = dev_test_split(ids, 0.2, seed=0)
    assert len(dev) == 20 and len(test) == 83  # int(0.2 * 103)
    assert set(dev) | set(test) == set(ids) and not set(dev) & set(test)
    assert dev == [i for i in ids if i in set(dev)]  # input order kept
    assert dev_test_split(ids, 0.2, seed=0) == (dev, test)
    assert dev_test_split(ids, 0.2, seed=1)[0] != dev
    with pytest.raises(ValueError):
        dev_test_split(ids, 1.5)
    with pytest.raises(ValueError):
        dev_test_split(["a", "a"])


def test_dev_test_split_keeps_groups_whole():
    ids = [f"g{g}r{r}" for g in range(25) for r in range(4)]
    groups = {i: i.split("r")[0] for i in ids}
    dev, test = dev_test_split(ids, 0.2, seed=3, groups=groups)
    assert len(dev) == 20
    dev_groups = {groups[i] for i in dev}
    assert not dev_groups & {groups[i] for i in test}
    assert all(sum(groups[i] == g for i in dev) == 4 for g in dev_groups)


def test_calibrate_end_to_end():
    rng = random.Random(5)
    conf, table = {}, {}
    for k in range(200):
        c = rng.random()
        conf[k] = c
        # Ground truth: low-confidence examples want 0.8, others 2.0, 90 % of the time.
        want = 0.8 if c < 0.3 else 2.0
        table[k] = {a: (a == want) == (rng.random() < 0.9) for a in ALPHA_GRID}
    cal = calibrate(conf, table, seed=0)
    assert len(cal.dev_ids) == 40 and len(cal.test_ids) == 160
    assert (cal.alpha_low, cal.alpha_high) == (0.8, 2.0)
    assert 0.2 <= cal.threshold <= 0.4
    again = evaluate_cell(conf, table, cal.alpha_low, cal.alpha_high, cal.threshold, ids=cal.test_ids)
    assert again == cal.test
    assert cal.test.accuracy > 80.0
    assert np.isclose(cal.dev.best.accuracy, max(c.accuracy for c in cal.dev.cells))
