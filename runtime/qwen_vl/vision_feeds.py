"""The vision graph's inputs for one image: its patches and the index tensors computed from its grid alone.

    grid (t, h, w) --vision_index--> rotary_positions [N, 2]       (row, col) of each patch
                                     frame_segments   [N]          full attention within a frame
    Qwen2.5-VL (window attention):   window_index     [N/m^2]      merged patches, window by window
                                     window_reverse   [N/m^2]      its inverse permutation
                                     window_segments  [N]          window id of each (reordered) patch
    Qwen3-VL (learned position grid): position_indices [4, N], position_weights [4, N]

The graph works in window order where the tower does (Qwen2.5-VL): the segments are given in that
order.  No tensor here depends on the pixels, so one exported graph serves every grid.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from . import vision_index


@dataclass(frozen=True)
class VisionSpec:
    """What the index tensors need from the checkpoint's vision config (recorded in the manifest)."""
    patch_size: int
    merge_size: int
    window_size: int | None             # Qwen2.5-VL: the window side in pixels; None: no window attention
    position_grid_side: int | None      # Qwen3-VL: the learned position table's side; None: no table

    @classmethod
    def from_config(cls, vision_config: dict) -> "VisionSpec":
        table = vision_config.get("num_position_embeddings")
        window = vision_config.get("window_size") if vision_config.get("fullatt_block_indexes") is not None else None
        return cls(int(vision_config["patch_size"]), int(vision_config["spatial_merge_size"]),
                   None if window is None else int(window), None if table is None else int(round(table ** 0.5)))

    def to_dict(self) -> dict:
        return asdict(self)


def vision_feeds(pixel_values: np.ndarray, grid, spec: VisionSpec) -> dict[str, np.ndarray]:
    """``pixel_values [N, C*T*P*P]`` (merge-block order, ``image.flatten_patches``) and its grid -> the graph's feeds."""
    t, h, w = (int(v) for v in grid)
    patches = t * h * w
    if pixel_values.shape[0] != patches:
        raise ValueError(f"grid {t}x{h}x{w} has {patches} patches, pixel_values has {pixel_values.shape[0]}")
    unit = spec.merge_size ** 2
    frame = np.repeat(np.arange(t, dtype=np.int64), h * w)                                  # [N]
    feeds = {"pixel_values": pixel_values,
             "rotary_positions": vision_index.rotary_positions(grid, spec.merge_size),     # [N, 2]
             "frame_segments": frame}
    if spec.window_size is not None:
        order, cu = vision_index.window_index(grid, spec.merge_size, spec.patch_size, spec.window_size)
        window_of_patch = np.repeat(np.arange(len(cu) - 1, dtype=np.int64), np.diff(cu))   # [N], window order
        feeds.update(window_index=order, window_reverse=np.argsort(order).astype(np.int64),
                     window_segments=window_of_patch)
        # the frames in window order: windows never cross a frame, so each window's frame is its patches'
        feeds["frame_segments"] = frame.reshape(-1, unit)[order].reshape(-1)
    if spec.position_grid_side is not None:
        idx, wts = vision_index.position_weights(grid, spec.merge_size, spec.position_grid_side)
        feeds.update(position_indices=idx, position_weights=wts)
    return feeds
