"""The PNGs of calibration and evaluation (matplotlib, Agg backend: no display needed).

matplotlib is an optional extra (``adaptvis-edge[calibration]``).  Every command that
plots checks :func:`have_matplotlib` first; without it, it prints
:data:`MISSING_MATPLOTLIB` once (one line) and writes everything but the PNGs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .grid import GridResult

MISSING_MATPLOTLIB = "plots skipped: pip install 'adaptvis-edge[calibration]' for matplotlib"


def have_matplotlib() -> bool:
    """Whether matplotlib can be imported (the plotting functions need it)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend; ImportError without matplotlib."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


_pyplot = pyplot


def _tick_positions(n: int, most: int = 16) -> list[int]:
    if n <= most:
        return list(range(n))
    step = int(np.ceil(n / most))
    return list(range(0, n, step))


def calibration_heatmap(grid: GridResult, path: str | Path, title: str = "AdaptVis dev accuracy") -> Path:
    """Dev accuracy over alpha_high (rows) x threshold (columns), for the chosen alpha_low;
    the chosen cell is boxed."""
    plt = _pyplot()
    best = grid.best
    lows, highs, ths = grid.alpha_lows, grid.alpha_highs, grid.thresholds
    data = grid.accuracy_array()[lows.index(best.alpha_low)]          # [len(highs), len(ths)]
    fig, ax = plt.subplots(figsize=(max(6.0, min(16.0, 0.28 * len(ths) + 3)), 1.0 + 0.7 * len(highs) + 1.2))
    im = ax.imshow(data, aspect="auto", origin="lower", cmap="viridis", interpolation="nearest",
                   vmin=0.0, vmax=float(data.max()) if data.max() > 0 else 100.0)
    xs = _tick_positions(len(ths))
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{ths[i]:.3g}" for i in xs], rotation=60, fontsize=8)
    ax.set_yticks(range(len(highs)))
    ax.set_yticklabels([f"{h:g}" for h in highs])
    ax.set_xlabel("confidence threshold (every candidate, in order; not to scale)")
    ax.set_ylabel("alpha_high")
    bx, by = ths.index(best.threshold), highs.index(best.alpha_high)
    ax.add_patch(plt.Rectangle((bx - 0.5, by - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    ax.set_title(f"{title}\nalpha_low = {best.alpha_low:g}; chosen: alpha_high = {best.alpha_high:g}, "
                 f"threshold = {best.threshold:.3g} ({best.accuracy:.1f} %, n = {best.n})", fontsize=10)
    fig.colorbar(im, ax=ax, label="accuracy (%)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def answer_histograms(counts: Mapping[str, Mapping[str, Mapping[str, int]]], categories: Sequence[str],
                      path: str | Path, title: str) -> Path:
    """Grouped bars: how often each answer category occurs with the image and with the
    blank image, one panel per split.

    ``counts[split][condition][category]``: split e.g. ``"correct"`` / ``"incorrect"``,
    condition ``"with image"`` / ``"blank image"``."""
    plt = _pyplot()
    splits = list(counts)
    fig, axes = plt.subplots(1, len(splits), figsize=(4.8 * len(splits), 3.8), squeeze=False, sharey=True)
    x = np.arange(len(categories))
    for ax, split in zip(axes[0], splits):
        conds = list(counts[split])
        width = 0.8 / max(1, len(conds))
        total = 0
        for k, cond in enumerate(conds):
            vals = [counts[split][cond].get(c, 0) for c in categories]
            total = max(total, sum(vals))
            ax.bar(x + (k - (len(conds) - 1) / 2) * width, vals, width, label=cond)
        ax.set_xticks(x)
        ax.set_xticklabels(categories, rotation=30)
        ax.set_title(f"{split} (n = {total})")
        ax.set_xlabel("option word in the answer")
    axes[0][0].set_ylabel("answers")
    axes[0][-1].legend()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
