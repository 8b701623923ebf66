"""runtime.qwen_vl.vision_index against the vision towers' own computations in transformers."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from runtime.qwen_vl.vision_index import (full_cu_seqlens, position_weights, rotary_angles, rotary_positions,
                                          window_index)

# merged grids 1x1, 2x2 (one window exactly: transformers pads a whole empty window), 3x5 (edge windows),
# 4x6, 7x2 (tall), and a 2-frame grid
GRIDS = [(1, 2, 2), (1, 4, 4), (1, 6, 10), (1, 8, 12), (1, 14, 4), (2, 4, 6)]


@pytest.fixture(scope="module")
def towers(checkpoint_dir):
    from transformers import AutoModelForImageTextToText

    return {size: AutoModelForImageTextToText.from_pretrained(checkpoint_dir(size)).model.visual.eval()
            for size in ("tiny-qwen2.5-vl", "tiny-qwen3-vl")}


@pytest.mark.parametrize("size", ["tiny-qwen2.5-vl", "tiny-qwen3-vl"])
def test_rotary_angles_equal_rot_pos_emb(size, towers):
    tower = towers[size]
    head_dim = tower.config.hidden_size // tower.config.num_heads
    for grid in GRIDS:
        want = tower.rot_pos_emb(torch.tensor([grid])).numpy()                  # [N, head_dim / 2]
        got = rotary_angles(grid, tower.spatial_merge_size, head_dim)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)
        pos = rotary_positions(grid, tower.spatial_merge_size)                 # frequency 0 is 1: the positions
        assert np.array_equal(want[:, 0], pos[:, 0]) and np.array_equal(want[:, head_dim // 4], pos[:, 1])


def test_window_index_and_segments_equal_get_window_index(towers):
    tower = towers["tiny-qwen2.5-vl"]
    cfg = tower.config
    for grid in GRIDS:
        want_index, want_cu = tower.get_window_index(torch.tensor([grid]))
        want_cu = torch.unique_consecutive(torch.tensor(want_cu, dtype=torch.int32)).numpy()
        index, cu = window_index(grid, cfg.spatial_merge_size, cfg.patch_size, cfg.window_size)
        assert np.array_equal(index, want_index.numpy()) and np.array_equal(cu, want_cu), grid
        assert cu.dtype == np.int32 and index.dtype == np.int64
    index, cu = window_index((1, 6, 10), 2, 14, 56)                           # the sketch in the module
    assert index.tolist() == [0, 1, 5, 6, 2, 3, 7, 8, 4, 9, 10, 11, 12, 13, 14]
    assert (cu // 4).tolist() == [0, 4, 8, 10, 12, 14, 15]


def test_full_segments_are_one_per_frame():
    assert full_cu_seqlens((2, 4, 6)).tolist() == [0, 24, 48]


def test_position_weights_interpolate_as_fast_pos_embed_interpolate(towers):
    tower = towers["tiny-qwen3-vl"]
    table = tower.pos_embed.weight.detach().numpy()                          # [g*g, hidden]
    for grid in GRIDS + [(1, 2, 30), (1, 16, 2)]:
        with torch.no_grad():
            want = tower.fast_pos_embed_interpolate(torch.tensor([grid])).numpy()   # [N, hidden]
        idx, weights = position_weights(grid, tower.spatial_merge_size, tower.num_grid_per_side)
        got = sum(weights[k][:, None] * table[idx[k]] for k in range(4))
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
        assert idx.shape == weights.shape == (4, int(np.prod(grid)))
        np.testing.assert_allclose(weights.sum(0), 1.0, atol=1e-6)
