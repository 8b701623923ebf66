"""The decoder's last-row attention -> per-layer maps on the image's patch grid.

    last_row [L, total]  --keys [image_start, image_end)-->  [L, T]
        T = CLS? + rows * cols   (CLS first, then the patches row-major, as CLIP flattens its patch grid;
                                  Qwen: the merged patches row-major, rows x cols = h/merge x w/merge)
        --drop CLS (kept in ``cls``)--> [L, rows * cols] --reshape--> maps [L, rows, cols]
"""
from __future__ import annotations

import math

import numpy as np

from graphs.manifest import Manifest

from .answer import AttentionMaps
from .errors import BundleError
from .standard_decoder import StepAttention


def image_grid(manifest: Manifest) -> tuple[int, int, bool]:
    """(rows, cols, CLS kept) of the image tokens, from the manifest.

    Manifests written before ``image_grid`` was recorded: a square grid, with a CLS
    token when the image-token count is a square plus one (the two cannot both hold).
    """
    tokens = manifest.image_tokens_per_image
    if manifest.image_grid is not None:
        (rows, cols), cls = manifest.image_grid, bool(manifest.image_cls_token)
    else:
        side = math.isqrt(tokens)
        cls = side * side != tokens
        rows = cols = math.isqrt(tokens - cls)
    if rows * cols + cls != tokens:
        raise BundleError(f"the manifest's image grid {rows}x{cols}{' + CLS' if cls else ''} does not hold its "
                          f"{tokens} image tokens")
    return rows, cols, cls


def attention_maps(step: StepAttention, image_start: int, grid: tuple[int, int, bool],
                   box: tuple[float, float, float, float]) -> AttentionMaps:
    """``step``'s last row over the image tokens at ``[image_start, image_start + T)``, on ``grid``
    (rows, cols, CLS first: ``image_grid`` for LLaVA, the merged grid of the image for Qwen)."""
    rows, cols, cls = grid
    tokens = step.last_row[:, image_start: image_start + rows * cols + cls]          # [L, T]
    return AttentionMaps(
        maps=np.ascontiguousarray(tokens[:, int(cls):].reshape(-1, rows, cols), dtype=np.float32),   # [L, rows, cols]
        image_share=np.asarray(step.image_share, dtype=np.float32),                                  # [L]
        cls=np.ascontiguousarray(tokens[:, 0], dtype=np.float32) if cls else None,                   # [L]
        box=tuple(float(v) for v in box))
