"""How much of the image attention falls inside the objects' boxes (per layer).

A map cell is one patch of the picture the model sees (``AttentionMaps.maps[l, r, c]``).
That picture covers the rectangle ``AttentionMaps.box = (left, top, right, bottom)`` of
the original image, so with a ``rows x cols`` grid, cell ``(r, c)`` covers the original
pixels ``x in [left + c * w, left + (c + 1) * w)``, ``y in [top + r * h, top + (r + 1) * h)``
with ``w = (right - left) / cols``, ``h = (bottom - top) / rows``.  An object's box
``[x0, y0, x1, y1]`` (original pixels, ``x1`` / ``y1`` exclusive, i.e. pixel edges) is
mapped into grid units the same way, and each cell counts with the fraction of its area
the box covers (:func:`box_coverage`): a box over half a cell counts that cell's
attention half.  Parts of a box outside the model's picture (cut off by the centre crop)
cover no cell.

``share[l] = sum(maps[l] * coverage) / sum(maps[l])``: the fraction of layer ``l``'s
attention on the patch grid (a CLS token, which has no place, left out) that lies
inside the box.  Attention spread evenly over the patches would give the box's
**area fraction** ``coverage.sum() / (rows * cols)``: the chance level to compare with.

The union of the boxes (``"union"``; A and B for the two-object sets) counts each
cell's covered area once (where boxes overlap, the overlap counts once).
"""
from __future__ import annotations

import itertools
import math
from typing import Mapping, Optional, Sequence

import numpy as np

UNION = "union"


def middle_layers(num_layers: int) -> tuple[int, int]:
    """``[start, stop)`` of the middle half of the layers (all of them below 4 layers)."""
    q = num_layers // 4
    return q, num_layers - q


def parse_box(value) -> Optional[tuple[float, float, float, float]]:
    """``[x0, y0, x1, y1]`` with ``x1 > x0``, ``y1 > y0``, finite numbers, else None."""
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        return None
    try:
        x0, y0, x1, y1 = (float(v) for v in value)
    except (TypeError, ValueError):
        return None
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def parse_boxes(boxes) -> dict[str, tuple[float, float, float, float]]:
    """The usable boxes of an item's ``boxes`` (``{"A": [...], "B": [...]}``), in key order;
    malformed ones are left out (an empty dict when none is usable)."""
    if not isinstance(boxes, Mapping):
        return {}
    out = {}
    for k, v in boxes.items():
        b = parse_box(v)
        if b is not None and k != UNION:
            out[str(k)] = b
    return out


def _overlap(lo: float, hi: float, n: int) -> np.ndarray:
    """Length of ``[lo, hi)`` inside each unit interval ``[i, i + 1)``, i < n.  [n]"""
    i = np.arange(n, dtype=np.float64)
    return np.clip(np.minimum(hi, i + 1) - np.maximum(lo, i), 0.0, 1.0)


def to_grid(box: Sequence[float], picture: Sequence[float], grid: tuple[int, int]) -> tuple[float, float, float, float]:
    """A box in original-image pixels -> grid units (columns, rows) of the model's picture,
    which covers ``picture = (left, top, right, bottom)`` of the original image."""
    left, top, right, bottom = (float(v) for v in picture)
    rows, cols = grid
    if right <= left or bottom <= top:
        raise ValueError(f"the picture's box {tuple(picture)} is empty")
    sx, sy = cols / (right - left), rows / (bottom - top)
    x0, y0, x1, y1 = (float(v) for v in box)
    return (x0 - left) * sx, (y0 - top) * sy, (x1 - left) * sx, (y1 - top) * sy


def box_coverage(box: Sequence[float], picture: Sequence[float], grid: tuple[int, int]) -> np.ndarray:
    """float64 ``[rows, cols]``: the fraction of each cell's area inside ``box`` (in [0, 1])."""
    rows, cols = grid
    gx0, gy0, gx1, gy1 = to_grid(box, picture, grid)
    return np.outer(_overlap(gy0, gy1, rows), _overlap(gx0, gx1, cols))


def _intersection(boxes):
    x0, y0 = max(b[0] for b in boxes), max(b[1] for b in boxes)
    x1, y1 = min(b[2] for b in boxes), min(b[3] for b in boxes)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def union_coverage(boxes: Sequence[Sequence[float]], picture, grid: tuple[int, int]) -> np.ndarray:
    """Fraction of each cell covered by the union of ``boxes``, each point counted once
    (exact: inclusion-exclusion over the boxes' intersections, which are rectangles)."""
    if len(boxes) > 12:
        raise ValueError(f"{len(boxes)} boxes: at most 12")
    cov = np.zeros(grid, dtype=np.float64)
    for k in range(1, len(boxes) + 1):
        for subset in itertools.combinations(boxes, k):
            both = _intersection(subset)
            if both is not None:
                cov += (-1) ** (k + 1) * box_coverage(both, picture, grid)
    return np.clip(cov, 0.0, 1.0)


def share_inside(maps: np.ndarray, coverage: np.ndarray) -> np.ndarray:
    """float64 ``[L]``: per layer, the fraction of the map's mass inside ``coverage``
    (NaN where a layer's map sums to 0).  ``maps`` ``[L, rows, cols]`` or ``[rows, cols]``."""
    m = np.asarray(maps, dtype=np.float64)
    if m.ndim == 2:
        m = m[None]
    if m.shape[1:] != coverage.shape:
        raise ValueError(f"maps of shape {m.shape} do not match a coverage of shape {coverage.shape}")
    total = m.sum(axis=(1, 2))
    inside = (m * coverage).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, inside / np.where(total > 0, total, 1.0), np.nan)


def coverages(boxes: Mapping[str, Sequence[float]], picture, grid: tuple[int, int]) -> dict[str, np.ndarray]:
    """One coverage per box, plus ``"union"`` of them all when there are several."""
    out = {k: box_coverage(b, picture, grid) for k, b in boxes.items()}
    if len(boxes) > 1:
        out[UNION] = union_coverage(list(boxes.values()), picture, grid)
    return out


def area_fractions(boxes: Mapping[str, Sequence[float]], picture, grid: tuple[int, int]) -> dict[str, float]:
    """The chance level per box (and the union): the share a uniform map would put inside."""
    rows, cols = grid
    return {k: float(c.sum() / (rows * cols)) for k, c in coverages(boxes, picture, grid).items()}


def alignment(attention, boxes) -> Optional[dict]:
    """The shares of one answer's attention inside an item's boxes, JSON-ready (what the
    evaluation cache stores per AdaptVis pass)::

        {"confidence": {"A": [per layer], "B": [...], "union": [...]},   # alpha = 1
         "rescaled":   {...},                                          # the chosen alpha
         "area": {"A": fraction, "B": ..., "union": ...}}                # chance level

    Shares are fractions in [0, 1] (``None`` for a layer whose map sums to 0), rounded
    to 6 decimals.  ``attention``: ``Answer.attention`` (pass name -> AttentionMaps);
    ``boxes``: the item's ``boxes``.  None without usable boxes or maps.
    """
    parsed = parse_boxes(boxes)
    if not parsed or not attention:
        return None
    out: dict = {}
    area = None
    for which, maps in attention.items():
        grid = tuple(maps.maps.shape[1:])
        covs = coverages(parsed, maps.box, grid)
        out[which] = {k: _rounded(share_inside(maps.maps, c)) for k, c in covs.items()}
        if area is None:
            area = {k: round(float(c.sum() / (grid[0] * grid[1])), 6) for k, c in covs.items()}
    out["area"] = area
    return out


def _rounded(values: np.ndarray) -> list:
    return [None if not np.isfinite(v) else round(float(v), 6) for v in values]


def mean_over(values: Sequence[Optional[float]], layers: tuple[int, int]) -> Optional[float]:
    """Mean of ``values[start:stop]`` skipping None; None when nothing is left."""
    vals = [v for v in list(values)[layers[0]: layers[1]] if v is not None]
    return sum(vals) / len(vals) if vals else None


#: The passes of an alignment record, and what the summary calls them.
PASSES = (("confidence", "alpha_1"), ("rescaled", "chosen_alpha"))


def summarize_alignment(records: Sequence[Mapping], groups: Mapping[str, Sequence[int]]) -> dict:
    """Mean shares over groups of items, in percent.

    ``records``: one :func:`alignment` record per item; ``groups``: name -> indices into
    ``records``.  Per group: ``n``; ``chance`` (mean box area fraction per box key);
    ``alpha_1`` / ``chosen_alpha``: per box key, the mean over items of each item's share
    averaged over the middle layers (:func:`middle_layers`); ``per_layer``: the same per
    layer.  Keys without data are ``None``; groups without items are left out.
    """
    num_layers = max((len(v) for r in records for p, _ in PASSES for v in (r.get(p) or {}).values()), default=0)
    layers = middle_layers(num_layers)
    out = {"num_layers": num_layers, "middle_layers": list(layers), "groups": {}}
    for name, idx in groups.items():
        recs = [records[i] for i in idx]
        if not recs:
            continue
        keys = list(dict.fromkeys(k for r in recs for k in (r.get("area") or {})))
        g: dict = {"n": len(recs),
                   "chance": {k: _pct_mean([r["area"].get(k) for r in recs if r.get("area")]) for k in keys}}
        per_layer: dict = {}
        for p, label in PASSES:
            g[label] = {k: _pct_mean([mean_over(r[p][k], layers) for r in recs if k in (r.get(p) or {})])
                        for k in keys}
            per_layer[label] = {k: [_pct_mean([r[p][k][l] for r in recs if k in (r.get(p) or {})
                                               and l < len(r[p][k])]) for l in range(num_layers)] for k in keys}
        g["per_layer"] = per_layer
        out["groups"][name] = g
    return out


def _pct_mean(values) -> Optional[float]:
    vals = [v for v in values if v is not None]
    return 100.0 * sum(vals) / len(vals) if vals else None
