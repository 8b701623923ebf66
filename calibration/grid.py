"""The pure part of AdaptVis calibration: grid search over (alpha_low, alpha_high,
threshold) from precomputed per-example results, and the dev/test split.

Inputs, per example id:

* ``confidences[id]``: the alpha = 1 pass's confidence (largest softmax probability of
  the first generated token);
* ``table[id][alpha]``: whether the answer generated with that alpha was correct.

Rule (AdaptVis): ``alpha = alpha_low if confidence < threshold else alpha_high``.
A cell's accuracy is the percentage of examples whose chosen alpha's answer was correct.

Tie-breaking among cells of equal accuracy (deterministic), in this order:

1. the smallest intervention: smallest ``(1 - alpha_low) + (alpha_high - 1)``;
2. threshold closest to a reference threshold (the paper's value for the subset when
   ``subset`` is given and in :data:`~evaluation.paper_settings.PAPER_SETTINGS`, else ``reference_threshold``,
   default 0.5) -- within a plateau of equal accuracy this picks the point nearest the
   paper default;
3. the smaller threshold;
4. the larger ``alpha_low``, then the smaller ``alpha_high``.

Accuracies are compared exactly: counts of correct examples, not rounded percentages.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Hashable, Iterable, Mapping, Optional, Sequence

import numpy as np

from evaluation.paper_settings import PAPER_SETTINGS

ALPHA_GRID: tuple[float, ...] = (0.5, 0.8, 1.2, 1.5, 2.0)
ALPHA_LOW_GRID: tuple[float, ...] = (0.5, 0.8)
ALPHA_HIGH_GRID: tuple[float, ...] = (1.2, 1.5, 2.0)


def choose_alpha(confidence: float, alpha_low: float, alpha_high: float, threshold: float) -> float:
    """The AdaptVis rule: ``alpha_low`` if ``confidence < threshold`` else ``alpha_high``."""
    return alpha_low if confidence < threshold else alpha_high


def default_thresholds(confidences: Iterable[float] = ()) -> list[float]:
    """0.05, 0.10, ..., 0.95 (exact k/100 values) plus every distinct confidence, sorted.

    With every confidence as a candidate, every split of the examples into
    "low" / "high" reachable by a threshold in (min conf, 1] is covered.  (All examples
    low, i.e. a threshold above the largest confidence, is ScalingVis with alpha_low;
    evaluate it with :func:`constant_alpha_accuracy`.)"""
    grid = {k / 100 for k in range(5, 100, 5)}
    grid.update(float(c) for c in confidences)
    return sorted(grid)


@dataclass(frozen=True)
class Cell:
    alpha_low: float
    alpha_high: float
    threshold: float
    n_correct: int
    n: int
    n_low: int  # examples sent to alpha_low

    @property
    def accuracy(self) -> float:
        return 100.0 * self.n_correct / self.n if self.n else 0.0


@dataclass(frozen=True)
class GridResult:
    cells: tuple[Cell, ...]
    best: Cell
    ids: tuple[Hashable, ...]
    reference_threshold: float

    def accuracy_array(self) -> np.ndarray:
        """Accuracies shaped ``(len(alpha_lows), len(alpha_highs), len(thresholds))``
        in the order of :attr:`alpha_lows`, :attr:`alpha_highs`, :attr:`thresholds`."""
        lows, highs, ths = self.alpha_lows, self.alpha_highs, self.thresholds
        arr = np.empty((len(lows), len(highs), len(ths)))
        for c in self.cells:
            arr[lows.index(c.alpha_low), highs.index(c.alpha_high), ths.index(c.threshold)] = c.accuracy
        return arr

    @property
    def alpha_lows(self) -> list[float]:
        return list(dict.fromkeys(c.alpha_low for c in self.cells))

    @property
    def alpha_highs(self) -> list[float]:
        return list(dict.fromkeys(c.alpha_high for c in self.cells))

    @property
    def thresholds(self) -> list[float]:
        return list(dict.fromkeys(c.threshold for c in self.cells))


def tie_key(c: Cell, ref: float) -> tuple:
    change = round((1.0 - c.alpha_low) + (c.alpha_high - 1.0), 9)
    return (-c.n_correct, change, round(abs(c.threshold - ref), 12), c.threshold, -c.alpha_low, c.alpha_high)


def _matrix(ids: Sequence[Hashable], table: Mapping[Hashable, Mapping[float, bool]],
            alphas: Sequence[float]) -> np.ndarray:
    out = np.zeros((len(alphas), len(ids)), dtype=bool)
    missing = []
    for j, i in enumerate(ids):
        row = table.get(i)
        if row is None:
            missing.append(f"{i!r}: no results")
            continue
        for k, a in enumerate(alphas):
            if a not in row:
                missing.append(f"{i!r}: no result for alpha={a}")
            else:
                out[k, j] = bool(row[a])
    if missing:
        raise ValueError(f"incomplete result table ({len(missing)} gaps), e.g. " + "; ".join(missing[:5]))
    return out


def grid_search(
    confidences: Mapping[Hashable, float],
    table: Mapping[Hashable, Mapping[float, bool]],
    alpha_lows: Sequence[float] = ALPHA_LOW_GRID,
    alpha_highs: Sequence[float] = ALPHA_HIGH_GRID,
    thresholds: Optional[Sequence[float]] = None,
    ids: Optional[Sequence[Hashable]] = None,
    subset: Optional[str] = None,
    reference_threshold: float = 0.5,
    round_confidence: Optional[int] = None,
) -> GridResult:
    """Accuracy of every (alpha_low, alpha_high, threshold) cell, and the best cell.

    ``ids`` restricts the search to those examples (e.g. the dev split); default: all
    ids of ``confidences``, in sorted order when sortable.  ``thresholds`` default to
    :func:`default_thresholds` of the (possibly rounded) confidences of those ids.
    ``round_confidence=2`` rounds confidences to 2 decimals first, as the reference
    code does.  Raises ``ValueError`` for an empty id set or an incomplete table.
    """
    if ids is None:
        try:
            ids = sorted(confidences)
        except TypeError:
            ids = list(confidences)
    ids = tuple(ids)
    if not ids:
        raise ValueError("no examples to calibrate on")
    if not alpha_lows or not alpha_highs:
        raise ValueError("alpha_lows and alpha_highs must be non-empty")
    try:
        conf = np.array([float(confidences[i]) for i in ids], dtype=float)
    except KeyError as e:
        raise ValueError(f"no confidence for example {e.args[0]!r}") from None
    if not np.all(np.isfinite(conf)):
        raise ValueError("confidences must be finite")
    if round_confidence is not None:
        conf = np.round(conf, round_confidence)
    ths = list(default_thresholds(conf.tolist()) if thresholds is None else thresholds)
    if not ths:
        raise ValueError("no thresholds to try")
    lows, highs = [float(a) for a in alpha_lows], [float(a) for a in alpha_highs]
    alphas = list(dict.fromkeys(lows + highs))
    m = _matrix(ids, table, alphas)
    row = {a: k for k, a in enumerate(alphas)}

    th_arr = np.asarray(ths, dtype=float)
    low_mask = conf[None, :] < th_arr[:, None]  # (T, N)
    n_low = low_mask.sum(axis=1)
    cells = []
    for lo in lows:
        c_lo = m[row[lo]]
        for hi in highs:
            c_hi = m[row[hi]]
            n_correct = np.where(low_mask, c_lo[None, :], c_hi[None, :]).sum(axis=1)
            for t, nc, nl in zip(ths, n_correct.tolist(), n_low.tolist()):
                cells.append(Cell(lo, hi, float(t), int(nc), len(ids), int(nl)))
    ref = PAPER_SETTINGS[subset][2] if subset in PAPER_SETTINGS else reference_threshold
    best = min(cells, key=lambda c: tie_key(c, ref))
    return GridResult(tuple(cells), best, ids, ref)


def evaluate_cell(confidences: Mapping[Hashable, float], table: Mapping[Hashable, Mapping[float, bool]],
                  alpha_low: float, alpha_high: float, threshold: float,
                  ids: Optional[Sequence[Hashable]] = None, round_confidence: Optional[int] = None) -> Cell:
    """One cell, e.g. the dev-chosen cell on the test split."""
    r = grid_search(confidences, table, [alpha_low], [alpha_high], [threshold], ids=ids,
                    round_confidence=round_confidence)
    return r.cells[0]


def constant_alpha_accuracy(table: Mapping[Hashable, Mapping[float, bool]], alphas: Sequence[float] = ALPHA_GRID,
                            ids: Optional[Sequence[Hashable]] = None) -> dict[float, float]:
    """ScalingVis: accuracy (percent) of each fixed alpha over ``ids`` (default all)."""
    ids = tuple(table) if ids is None else tuple(ids)
    if not ids:
        raise ValueError("no examples")
    m = _matrix(ids, table, list(alphas))
    return {float(a): 100.0 * float(m[k].mean()) for k, a in enumerate(alphas)}


def dev_test_split(ids: Sequence[Hashable], dev_fraction: float = 0.2, seed: int = 0,
                   groups: Optional[Mapping[Hashable, Hashable]] = None) -> tuple[list, list]:
    """Seeded split into (dev, test); each list keeps the input order.

    The dev part has ``int(dev_fraction * N)`` examples (floor, like the reference's
    ``random.sample(range(N), int(0.2 * N))``).  With ``groups`` (id -> group key, e.g.
    ``item.group`` of a Controlled set), whole groups are assigned: groups are shuffled
    and taken into dev until it holds at least ``int(dev_fraction * N)`` examples, so
    pair/set accuracy stay computable on both parts.  Same ids, fraction and seed ->
    same split (stdlib ``random.Random(seed)``).
    """
    if not 0.0 <= dev_fraction <= 1.0:
        raise ValueError(f"dev_fraction must be in [0, 1], got {dev_fraction}")
    ids = list(ids)
    if len(set(ids)) != len(ids):
        raise ValueError("ids must be unique")
    rng = random.Random(seed)
    target = int(dev_fraction * len(ids))
    if groups is None:
        dev_set = set(rng.sample(ids, target))
    else:
        keys = list(dict.fromkeys(groups[i] for i in ids))
        rng.shuffle(keys)
        members: dict[Hashable, list] = {}
        for i in ids:
            members.setdefault(groups[i], []).append(i)
        dev_set = set()
        for k in keys:
            if len(dev_set) >= target:
                break
            dev_set.update(members[k])
    dev = [i for i in ids if i in dev_set]
    test = [i for i in ids if i not in dev_set]
    return dev, test


@dataclass(frozen=True)
class Calibration:
    """A dev-chosen cell and its accuracy on the test split."""

    dev: GridResult
    test: Cell
    dev_ids: tuple
    test_ids: tuple

    @property
    def alpha_low(self) -> float:
        return self.dev.best.alpha_low

    @property
    def alpha_high(self) -> float:
        return self.dev.best.alpha_high

    @property
    def threshold(self) -> float:
        return self.dev.best.threshold


def calibrate(confidences: Mapping[Hashable, float], table: Mapping[Hashable, Mapping[float, bool]],
              dev_fraction: float = 0.2, seed: int = 0, subset: Optional[str] = None,
              groups: Optional[Mapping[Hashable, Hashable]] = None,
              round_confidence: Optional[int] = None, **grid_kwargs) -> Calibration:
    """Split, search the grid on dev, evaluate the chosen cell on test."""
    try:
        all_ids = sorted(confidences)
    except TypeError:
        all_ids = list(confidences)
    dev, test = dev_test_split(all_ids, dev_fraction, seed, groups)
    if not dev or not test:
        raise ValueError(f"split of {len(all_ids)} examples left dev={len(dev)}, test={len(test)}")
    g = grid_search(confidences, table, ids=dev, subset=subset, round_confidence=round_confidence, **grid_kwargs)
    b = g.best
    t = evaluate_cell(confidences, table, b.alpha_low, b.alpha_high, b.threshold, ids=test,
                      round_confidence=round_confidence)
    return Calibration(g, t, tuple(dev), tuple(test))
