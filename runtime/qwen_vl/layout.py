"""The image's tokens in a Qwen-VL prompt: one ``<|image_pad|>`` becomes one per merged patch.

    chat template:   ... <|vision_start|> <|image_pad|> <|vision_end|> question ...
    expanded:        ... <|vision_start|> <|image_pad|> x (t*h*w / m^2) <|vision_end|> question ...

as transformers' Qwen processors expand it before tokenising; the expanded span is the decoder's
image-key mask (``image_token_mask``) and where the vision features are scattered.
"""
from __future__ import annotations

import numpy as np

from runtime.errors import PromptError


def image_token_count(grid, merge_size: int) -> int:
    """Image tokens the decoder sees for one grid ``(t, h, w)``: ``t * h * w / merge^2``."""
    t, h, w = (int(v) for v in grid)
    return t * h * w // (merge_size * merge_size)


def expand_image_tokens(ids, image_token: int, grids, merge_size: int) -> np.ndarray:
    """int64 ``[n']``: each single image token of ``ids`` (in order) repeated for its grid."""
    ids = [int(i) for i in ids]
    where = [i for i, t in enumerate(ids) if t == image_token]
    if len(where) != len(grids):
        raise PromptError(f"the prompt holds {len(where)} image placeholders for {len(grids)} images")
    out, at = [], 0
    for pos, grid in zip(where, grids):
        out.extend(ids[at:pos])
        out.extend([image_token] * image_token_count(grid, merge_size))
        at = pos + 1
    out.extend(ids[at:])
    return np.asarray(out, dtype=np.int64)
