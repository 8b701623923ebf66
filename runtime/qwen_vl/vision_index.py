"""The vision tower's index tensors that depend only on the image grid, in numpy (fed to one vision graph).

The tower sees the patches in merge-block order (``image.flatten_patches``): for each m x m block of
patches, row-major over the blocks, its m x m patches row-major.  From the grid ``(t, h, w)`` alone:

    rotary_positions   int64 [N, 2]     each patch's (row, col) on the patch grid: the 2-D rotary
                                        (angles: row * f_i and col * f_i for f_i = 1 / 10000^(2i / (head/2)))
    full_cu_seqlens    int32 [t + 1]    attention segments of the full-attention blocks: one per frame
    window_index       int64 [N / m^2]  Qwen2.5-VL: the merged patches regrouped window by window
                                        (windows of window_size / (P m) merged patches a side,
                                        cut short at the right and bottom edges)
    window_cu_seqlens  int32 [W + 1]    Qwen2.5-VL: the windowed blocks' segments, in patches
    position_weights   Qwen3-VL: the learned position grid (side g) bilinearly interpolated to (h, w):
                       idx int64 [4, N] and weights float32 [4, N], summed as sum_k weights[k] * table[idx[k]]

Qwen2.5-VL window order (merged grid 3 x 5, windows 2 x 2; the numbers are merged-patch indices):

    0  1 |  2  3 |  4          window_index = [0 1 5 6 | 2 3 7 8 | 4 9 | 10 11 | 12 13 | 14]
    5  6 |  7  8 |  9          window_cu_seqlens = m^2 x [0, 4, 8, 10, 12, 14, 15]
    -----+-------+---
   10 11 | 12 13 | 14
"""
from __future__ import annotations

import numpy as np


def rotary_positions(grid, merge_size: int) -> np.ndarray:
    """int64 ``[t*h*w, 2]``: (row, col) of each patch in merge-block order, repeated per frame."""
    t, h, w = (int(v) for v in grid)
    m = merge_size
    rows = np.arange(h).reshape(h // m, 1, m, 1)                        # [h/m, 1, m, 1]
    cols = np.arange(w).reshape(1, w // m, 1, m)                        # [1, w/m, 1, m]
    rows, cols = np.broadcast_arrays(rows, cols)                        # [h/m, w/m, m, m] each
    coords = np.stack([rows.ravel(), cols.ravel()], axis=-1)            # [h*w, 2]
    return np.tile(coords, (t, 1)).astype(np.int64)                     # [t*h*w, 2]


def rotary_angles(grid, merge_size: int, head_dim: int, theta: float = 10000.0) -> np.ndarray:
    """float32 ``[N, head_dim / 2]``: the vision rotary's angles (row frequencies, then column ones)."""
    dim = head_dim // 2
    freqs = (1.0 / (np.float32(theta) ** (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)))).astype(np.float32)
    pos = rotary_positions(grid, merge_size).astype(np.float32)         # [N, 2]
    return (pos[:, :, None] * freqs[None, None, :]).reshape(len(pos), -1).astype(np.float32)   # [N, dim]


def full_cu_seqlens(grid) -> np.ndarray:
    """int32 ``[t + 1]``: 0, h*w, 2*h*w, ...: full attention within each frame."""
    t, h, w = (int(v) for v in grid)
    return (np.arange(t + 1) * h * w).astype(np.int32)


def window_index(grid, merge_size: int, patch_size: int, window_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Qwen2.5-VL: int64 ``window_index [t*h*w / m^2]`` and int32 ``window_cu_seqlens [W + 1]`` (in patches)."""
    t, h, w = (int(v) for v in grid)
    side = window_size // merge_size // patch_size                      # merged patches per window side
    gh, gw = h // merge_size, w // merge_size
    order, lengths = [], []
    for frame in range(t):
        base = frame * gh * gw
        for top in range(0, gh, side):
            for left in range(0, gw, side):
                rows = np.arange(top, min(top + side, gh))[:, None]     # [r, 1]
                cols = np.arange(left, min(left + side, gw))[None, :]   # [1, c]
                order.append((base + rows * gw + cols).ravel())
                lengths.append(order[-1].size)
    unit = merge_size * merge_size
    cu = np.concatenate([[0], np.cumsum(lengths) * unit]).astype(np.int32)   # [W + 1]
    return np.concatenate(order).astype(np.int64), cu


def position_weights(grid, merge_size: int, grid_side: int) -> tuple[np.ndarray, np.ndarray]:
    """Qwen3-VL: bilinear interpolation of a ``grid_side`` x ``grid_side`` table onto (h, w) patches,
    merge-block order, repeated per frame: int64 ``idx [4, N]``, float32 ``weights [4, N]``.

    Sample points are ``i * (g - 1) / (h - 1)`` rounded once to float32 (torch's ``linspace``, which
    transformers uses, rounds differently depending on the CPU's vector width: its points can differ
    by an ulp, moving a floor by one with the weight moving to match).
    """
    t, h, w = (int(v) for v in grid)
    g = grid_side
    ys, xs = _points(h, g), _points(w, g)                               # [h], [w] float32
    y0, x0 = ys.astype(np.int64), xs.astype(np.int64)
    y1, x1 = np.minimum(y0 + 1, g - 1), np.minimum(x0 + 1, g - 1)
    dy, dx = (ys - y0).astype(np.float32), (xs - x0).astype(np.float32)
    one = np.float32(1)
    idx = [y0[:, None] * g + x0[None], y0[:, None] * g + x1[None], y1[:, None] * g + x0[None], y1[:, None] * g + x1[None]]
    wts = [(one - dy)[:, None] * (one - dx)[None], (one - dy)[:, None] * dx[None],
           dy[:, None] * (one - dx)[None], dy[:, None] * dx[None]]     # 4 x [h, w]
    order = _merge_block_order(h, w, merge_size)                        # [h*w]
    idx = np.stack([i.ravel()[order] for i in idx])                     # [4, h*w]
    wts = np.stack([x.ravel()[order] for x in wts]).astype(np.float32)  # [4, h*w]
    return np.tile(idx, (1, t)), np.tile(wts, (1, t))


def _points(n: int, g: int) -> np.ndarray:
    if n == 1:
        return np.zeros(1, dtype=np.float32)
    return (np.arange(n, dtype=np.float64) * (g - 1) / (n - 1)).astype(np.float32)


def _merge_block_order(h: int, w: int, m: int) -> np.ndarray:
    """Row-major patch indices ``[h*w]`` listed in merge-block order."""
    return np.arange(h * w).reshape(h // m, m, w // m, m).transpose(0, 2, 1, 3).ravel()
