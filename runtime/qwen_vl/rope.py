"""M-RoPE's cos/sin from ``position_ids [3, B, S]``: which of the three axes drives each frequency.

The rotary's ``head_dim / 2`` frequencies are split between the temporal, height and width
positions by ``mrope_section`` (summing to ``head_dim / 2``), in one of two layouts:

    chunked (Qwen2.5-VL, [16, 24, 24]):      T T ... T  H H ... H  W W ... W
    interleaved (Qwen3-VL, [24, 20, 20]):    T H W T H W ... T H W T T T T     (H, W every third
                                             frequency up to 3 x their section, the rest T)

``axis_of_frequency`` gives that map once; the angles are then ``position[axis[i]] * inv_freq[i]``
and cos/sin repeat them for both halves of the head (rotate-half).  Computed once per call and
shared by every layer.
"""
from __future__ import annotations

import numpy as np


def axis_of_frequency(mrope_section, interleaved: bool) -> np.ndarray:
    """int64 ``[head_dim / 2]``: 0 (t), 1 (h) or 2 (w) for each rotary frequency."""
    t, h, w = (int(v) for v in mrope_section)
    half = t + h + w
    if not interleaved:
        return np.repeat(np.arange(3, dtype=np.int64), [t, h, w])
    axis = np.zeros(half, dtype=np.int64)                  # T everywhere, then H and W every third slot
    axis[1:3 * h:3] = 1
    axis[2:3 * w:3] = 2
    return axis


def inv_freq(head_dim: int, theta: float) -> np.ndarray:
    """float32 ``[head_dim / 2]``: the default rope's ``1 / theta^(2i / head_dim)``."""
    exponents = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(head_dim)
    return (1.0 / (np.float32(theta) ** exponents)).astype(np.float32)


def mrope_cos_sin(positions: np.ndarray, frequencies: np.ndarray, axis: np.ndarray,
                  attention_scaling: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """``positions [3, B, S]`` -> float32 ``cos, sin [B, S, head_dim]``."""
    chosen = np.asarray(positions)[axis]                       # [F, B, S]: each frequency's axis
    angles = chosen.astype(np.float32).transpose(1, 2, 0) * frequencies.astype(np.float32)   # [B, S, F]
    emb = np.concatenate([angles, angles], axis=-1)             # [B, S, 2F]
    return ((np.cos(emb) * attention_scaling).astype(np.float32),
            (np.sin(emb) * attention_scaling).astype(np.float32))
