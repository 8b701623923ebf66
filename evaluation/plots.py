"""Plotting with matplotlib (Agg backend: no display needed), and the evaluation's answer histograms.

matplotlib is an optional extra (``adaptvis-edge[calibration]``).  Every command that
plots checks :func:`have_matplotlib` first; without it, it prints
:data:`MISSING_MATPLOTLIB` once (one line) and writes everything but the PNGs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

MISSING_MATPLOTLIB = "plots skipped: pip install 'adaptvis-edge[calibration]' for matplotlib"


def have_matplotlib() -> bool:
    """Whether matplotlib can be imported (the plotting functions need it)."""
    try:
        import matplotlib  # noqa: F401       # optional: matplotlib (the calibration extra), and heavy
    except ImportError:
        return False
    return True


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend; ImportError without matplotlib."""
    import matplotlib                  # optional and heavy: imported when a plot is drawn

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def answer_histograms(counts: Mapping[str, Mapping[str, Mapping[str, int]]], categories: Sequence[str],
                      path: str | Path, title: str) -> Path:
    """Grouped bars: how often each answer category occurs with the image and with the
    blank image, one panel per split.

    ``counts[split][condition][category]``: split e.g. ``"correct"`` / ``"incorrect"``,
    condition ``"with image"`` / ``"blank image"``."""
    plt = pyplot()
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
