"""What the vision graph gives for one image, and how it lands on the prompt's rows.

    rows      [T, C]      onto the embeddings of the image tokens [image_start, image_end)
    deepstack [D, T, C]   Qwen3-VL: added after the first D decoder layers, on the same rows; None elsewhere
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class ImageFeatures:
    rows: np.ndarray                     # [T, C]
    deepstack: np.ndarray | None = None  # [D, T, C]

    def deepstack_rows(self, image_start: int, image_end: int, lo: int, hi: int) -> np.ndarray | None:
        """``[D, 1, hi - lo, C]`` for the decoder call over prompt rows [lo, hi): the DeepStack features on
        the image rows among them, zeros elsewhere (all zeros for a generated token); None without DeepStack."""
        if self.deepstack is None:
            return None
        d, _, c = self.deepstack.shape
        out = np.zeros((d, 1, hi - lo, c), dtype=self.deepstack.dtype)          # [D, 1, S, C]
        first, last = max(lo, image_start), min(hi, image_end)
        if first < last:
            out[:, 0, first - lo: last - lo] = self.deepstack[:, first - image_start: last - image_start]
        return out
