"""evaluation.alignment: the share of a map inside boxes, on hand-made maps and boxes."""
from __future__ import annotations

import numpy as np
import pytest

from evaluation.alignment import (alignment, area_fractions, box_coverage, middle_layers, parse_boxes, share_inside,
                                   summarize_alignment, to_grid, union_coverage)
from runtime.answer import AttentionMaps

PICTURE = (0.0, 0.0, 40.0, 40.0)        # the model's picture = the whole 40 x 40 image; a 4 x 4 grid: 10 px cells
GRID = (4, 4)


def one_cell(row: int, col: int, layers: int = 1, grid=GRID) -> np.ndarray:
    m = np.zeros((layers,) + grid, dtype=np.float32)
    m[:, row, col] = 0.3                 # any scale: shares are fractions of the map's own mass
    return m


def test_a_map_all_in_one_cell():
    m = one_cell(1, 2)                                   # x 20..30, y 10..20
    assert share_inside(m, box_coverage([20, 10, 30, 20], PICTURE, GRID)).tolist() == [1.0]
    assert share_inside(m, box_coverage([15, 5, 35, 25], PICTURE, GRID)).tolist() == [1.0]   # box around the cell
    assert share_inside(m, box_coverage([0, 0, 20, 40], PICTURE, GRID)).tolist() == [0.0]    # the next column
    assert share_inside(m, box_coverage([30, 10, 40, 20], PICTURE, GRID)).tolist() == [0.0]  # touching edges only


def test_a_box_covering_half_a_cell():
    cov = box_coverage([20, 10, 25, 20], PICTURE, GRID)  # the left half of cell (1, 2)
    assert cov[1, 2] == 0.5 and cov.sum() == 0.5
    assert share_inside(one_cell(1, 2), cov).tolist() == [0.5]
    cov = box_coverage([25, 15, 35, 25], PICTURE, GRID)  # a quarter of four cells
    assert cov[1:3, 2:4].tolist() == [[0.25, 0.25], [0.25, 0.25]] and cov.sum() == 1.0
    assert share_inside(one_cell(1, 2), cov).tolist() == [0.25]
    uniform = np.ones((1, 4, 4))
    assert share_inside(uniform, box_coverage([20, 10, 25, 20], PICTURE, GRID))[0] == pytest.approx(0.5 / 16)
    assert area_fractions({"A": [20, 10, 25, 20]}, PICTURE, GRID) == {"A": pytest.approx(0.5 / 16)}


def test_the_grid_covers_the_pictures_box_not_the_image():
    # The picture lies at x -10..90, y 5..105 of the original (padding / a crop): 5 x 5 cells of 20 px.
    picture, grid = (-10.0, 5.0, 90.0, 105.0), (5, 5)
    assert to_grid([0, 5, 10, 25], picture, grid) == (0.5, 0.0, 1.0, 1.0)
    cov = box_coverage([0, 5, 10, 25], picture, grid)    # the right half of cell (0, 0)
    assert cov[0, 0] == 0.5 and cov.sum() == 0.5
    assert box_coverage([200, 200, 300, 300], picture, grid).sum() == 0.0        # outside the picture
    cov = box_coverage([-50, -50, 500, 500], picture, grid)                        # larger than the picture
    assert (cov == 1.0).all()
    # A non-square grid on a non-square picture: 2 rows x 4 columns over 80 x 20 px.
    cov = box_coverage([0, 0, 30, 5], (0, 0, 80, 20), (2, 4))
    assert cov.tolist() == [[0.5, 0.25, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]     # y half a row; x 1.5 columns


def test_the_union_counts_an_overlap_once():
    a, b = [0, 0, 20, 20], [10, 10, 30, 30]              # 400 + 400 - 100 px
    u = union_coverage([a, b], PICTURE, GRID)
    assert u.sum() * 100 == pytest.approx(700)
    assert u.max() <= 1.0
    assert area_fractions({"A": a, "B": b}, PICTURE, GRID)["union"] == pytest.approx(700 / 1600)
    c = [5, 5, 25, 15]                                    # three boxes: still exact
    assert union_coverage([a, b, c], PICTURE, GRID).sum() * 100 == pytest.approx(700 + 5 * 5)   # x 20..25, y 5..10
    assert union_coverage([a, [25, 25, 40, 40]], PICTURE, GRID).sum() * 100 == pytest.approx(400 + 225)


def test_per_layer_and_empty_layers():
    m = np.zeros((3, 4, 4))
    m[0, 0, 0] = 1.0                                     # layer 0: in box A
    m[1, 3, 3] = 2.0                                     # layer 1: outside
    # layer 2: no attention on the grid at all (e.g. all on a CLS token)
    s = share_inside(m, box_coverage([0, 0, 10, 10], PICTURE, GRID))
    assert s[0] == 1.0 and s[1] == 0.0 and np.isnan(s[2])


def test_alignment_record_from_attention_maps():
    maps = one_cell(1, 2, layers=3)
    maps[2] = 0.0
    att = {"confidence": AttentionMaps(maps=np.ones((3, 4, 4), dtype=np.float32), image_share=np.ones(3), box=PICTURE),
           "rescaled": AttentionMaps(maps=maps, image_share=np.ones(3), box=PICTURE)}
    rec = alignment(att, {"A": [20, 10, 25, 20], "B": [0, 0, 40, 10], "bad": [3, 3, 1, 1], "C": "x"})
    assert set(rec) == {"confidence", "rescaled", "area"}
    assert rec["area"] == {"A": pytest.approx(0.5 / 16), "B": 0.25, "union": pytest.approx(0.25 + 0.5 / 16)}
    assert rec["confidence"]["A"] == [pytest.approx(0.5 / 16)] * 3          # uniform: the area fraction
    assert rec["confidence"]["B"] == [0.25] * 3
    assert rec["rescaled"] == {"A": [0.5, 0.5, None], "B": [0.0, 0.0, None], "union": [0.5, 0.5, None]}
    assert alignment(att, None) is None and alignment(att, {"A": [1, 2]}) is None and alignment({}, {"A": [0, 0, 1, 1]}) is None
    assert parse_boxes({"A": [0, 0, 1, 1], "B": [0, 0, 0, 1], "C": [0, 0, float("nan"), 1]}) == {"A": (0, 0, 1, 1)}


def test_middle_layers():
    assert middle_layers(1) == (0, 1) and middle_layers(2) == (0, 2) and middle_layers(3) == (0, 3)
    assert middle_layers(4) == (1, 3) and middle_layers(30) == (7, 23) and middle_layers(32) == (8, 24)


def test_summary_means_over_items_and_middle_layers():
    def rec(conf_a, resc_a, area_a):
        return {"confidence": {"A": conf_a}, "rescaled": {"A": resc_a}, "area": {"A": area_a}}
    recs = [rec([0.0, 0.2, 0.4, 1.0], [0.0, 0.6, 0.8, 1.0], 0.1),     # middle layers of 4: 1 and 2
            rec([0.0, 0.4, None, 0.0], [1.0, 1.0, 1.0, 1.0], 0.3)]
    s = summarize_alignment(recs, {"all": [0, 1], "first": [0], "none": []})
    assert s["num_layers"] == 4 and s["middle_layers"] == [1, 3] and list(s["groups"]) == ["all", "first"]
    g = s["groups"]["all"]
    assert g["n"] == 2 and g["chance"]["A"] == pytest.approx(20.0)
    assert g["alpha_1"]["A"] == pytest.approx(100 * (0.3 + 0.4) / 2)            # item means 0.3 and 0.4 (None skipped)
    assert g["chosen_alpha"]["A"] == pytest.approx(100 * (0.7 + 1.0) / 2)
    assert g["per_layer"]["alpha_1"]["A"] == pytest.approx([0.0, 30.0, 40.0, 50.0])
    assert s["groups"]["first"]["chosen_alpha"]["A"] == pytest.approx(70.0)


def test_alignment_on_the_tiny_bundles_attention(bundle_dir, size):
    """On real maps: a box over the whole picture holds all of the grid's attention."""
    import runtime
    from tests.conftest import random_image

    vlm = runtime.load(bundle_dir(size))
    ans = vlm.answer(random_image(3, 40, 60), "Where is the cup?", max_new_tokens=2, return_attention=True)
    box = ans.attention["confidence"].box
    rec = alignment(ans.attention, {"A": list(box), "B": [box[0], box[1], (box[0] + box[2]) / 2, box[3]]})
    layers = vlm.manifest.decoder.num_layers
    for p in ("confidence", "rescaled"):
        assert rec[p]["A"] == pytest.approx([1.0] * layers, abs=1e-6)
        assert rec[p]["union"] == pytest.approx([1.0] * layers, abs=1e-6)
        assert all(0.0 < v < 1.0 for v in rec[p]["B"])
    assert rec["area"] == {"A": 1.0, "B": 0.5, "union": 1.0}
