"""M-RoPE position ids: the decoder's ``position_ids [3, B, S]`` (temporal, height, width) and the rope delta.

transformers' ``get_rope_index`` (Qwen2.5-VL and Qwen3-VL give the same ids for images: t = 1, so
the temporal index of every image token is 0 in both), in numpy.  For one row:

    text    <|im_start|>user\\n<|vision_start|>   [img x (h/m)(w/m)]   <|vision_end|>question...
    t       0  1  2  3  4                        5  5  5  5 ...       p  p+1 ...
    h       0  1  2  3  4                        5  5  6  6 ...            (p = 5 + max(h/m, w/m))
    w       0  1  2  3  4                        5  6  5  6 ...

Text tokens count on from the largest position before them plus one, on all three axes; an image's
tokens sit at (start, start + row, start + col) in row-major order of its merged grid.  Padding
(``attention_mask`` 0) gets position 1, as in transformers.  The delta is ``max position + 1 -
sequence length``: a decode step at cache position ``c`` has position ``c + delta`` on every axis.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from runtime.errors import PromptError


@dataclass(frozen=True)
class VisionTokens:
    """The config's vision token ids."""
    image: int
    video: int
    vision_start: int

    @classmethod
    def from_config(cls, config: dict) -> "VisionTokens":
        return cls(int(config["image_token_id"]), int(config["video_token_id"]), int(config["vision_start_token_id"]))


def rope_index(input_ids: np.ndarray, grids: np.ndarray | None, tokens: VisionTokens, merge_size: int,
               attention_mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``input_ids [B, S]``, the images' ``grids [I, 3]`` (t, h, w in patches, in prompt order) ->
    int64 ``positions [3, B, S]`` and ``deltas [B, 1]``."""
    ids = np.asarray(input_ids, dtype=np.int64)                              # [B, S]
    batch, length = ids.shape
    mask = np.ones_like(ids, dtype=bool) if attention_mask is None else np.asarray(attention_mask) == 1   # [B, S]
    if grids is None:                                                        # text only
        positions = np.where(mask, np.cumsum(mask, axis=-1) - 1, 1)          # [B, S]
        deltas = positions.max(axis=-1, keepdims=True) + 1 - length          # [B, 1]
        return np.broadcast_to(positions, (3, batch, length)).copy(), deltas
    grids = np.asarray(grids, dtype=np.int64).reshape(-1, 3)                 # [I, 3]
    positions = np.ones((3, batch, length), dtype=np.int64)                  # [3, B, S]
    deltas = np.zeros((batch, 1), dtype=np.int64)                            # [B, 1]
    next_image = 0
    for b in range(batch):
        row = ids[b][mask[b]]                                                # [n]
        row_positions, next_image = _row_positions(row, grids, next_image, tokens, merge_size)   # [3, n]
        positions[:, b, mask[b]] = row_positions
        deltas[b, 0] = row_positions.max() + 1 - length
    if next_image != len(grids):
        raise PromptError(f"{len(grids)} image grids were given but the prompts hold {next_image} images")
    return positions, deltas


def decode_positions(deltas: np.ndarray, start: int, steps: int = 1) -> np.ndarray:
    """Positions of ``steps`` tokens from cache position ``start``: int64 ``[3, B, steps]``, the same on every axis."""
    deltas = np.asarray(deltas, dtype=np.int64).reshape(-1, 1)              # [B, 1]
    flat = np.arange(start, start + steps, dtype=np.int64)[None, :] + deltas   # [B, steps]
    return np.broadcast_to(flat, (3, *flat.shape)).copy()


def _row_positions(row: np.ndarray, grids: np.ndarray, next_image: int, tokens: VisionTokens,
                   merge_size: int) -> tuple[np.ndarray, int]:
    """One unpadded row ``[n]`` -> ``[3, n]`` positions, and the index of the next unused grid."""
    starts = np.flatnonzero(row[:-1] == tokens.vision_start)                  # a marker as the last token marks nothing
    following = row[starts + 1]
    if np.any(following == tokens.video):
        raise PromptError("the prompt holds a video; only images are supported")
    n_images = int(np.sum(following == tokens.image))
    pieces, st, top = [], 0, 0                                               # top: the next free position
    for _ in range(n_images):
        if next_image >= len(grids):
            raise PromptError(f"the prompts hold more images than the {len(grids)} grids given")
        ed = st + int(np.flatnonzero(row[st:] == tokens.image)[0])
        t, h, w = (int(v) for v in grids[next_image])
        if h % merge_size or w % merge_size:
            raise PromptError(f"image grid {t}x{h}x{w} is not a multiple of the merge size {merge_size}")
        gh, gw = h // merge_size, w // merge_size
        count = t * gh * gw
        if ed + count > len(row) or np.any(row[ed:ed + count] != tokens.image):
            raise PromptError(f"image {next_image} needs {count} image tokens in a row (grid {t}x{h}x{w}, merge "
                              f"{merge_size}); the prompt has {int(np.sum(row[ed:ed + count] == tokens.image))}")
        pieces.append(np.arange(ed - st, dtype=np.int64)[None].repeat(3, 0) + top)          # [3, text]
        base = top + ed - st
        t_idx, h_idx, w_idx = np.meshgrid(np.arange(t), np.arange(gh), np.arange(gw), indexing="ij")
        image = np.stack([t_idx.ravel(), h_idx.ravel(), w_idx.ravel()]).astype(np.int64) + base   # [3, count]
        pieces.append(image)
        top = int(image.max()) + 1
        st, next_image = ed + count, next_image + 1
    if st < len(row):
        pieces.append(np.arange(len(row) - st, dtype=np.int64)[None].repeat(3, 0) + top)
    return np.concatenate(pieces, axis=1), next_image
