"""The calibration's PNG: dev accuracy over the grid (matplotlib: :func:`evaluation.plots.have_matplotlib` first)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from evaluation.plots import pyplot

from .grid import GridResult


def _tick_positions(n: int, most: int = 16) -> list[int]:
    if n <= most:
        return list(range(n))
    step = int(np.ceil(n / most))
    return list(range(0, n, step))


def calibration_heatmap(grid: GridResult, path: str | Path, title: str = "AdaptVis dev accuracy") -> Path:
    """Dev accuracy over alpha_high (rows) x threshold (columns), for the chosen alpha_low;
    the chosen cell is boxed."""
    plt = pyplot()
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
