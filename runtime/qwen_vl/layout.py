"""The image's tokens in a Qwen-VL prompt: one ``<|image_pad|>`` becomes one per merged patch.

    chat template:   ... <|vision_start|> <|image_pad|> <|vision_end|> question ...
    expanded:        ... <|vision_start|> <|image_pad|> x (t*h*w / m^2) <|vision_end|> question ...

as transformers' Qwen processors expand it before tokenising; the expanded span is the decoder's
image-key mask (``image_token_mask``) and where the vision features are scattered.
"""
from __future__ import annotations

import numpy as np

from runtime.errors import PromptError
from runtime.prompt import Prompt

from .positions import VisionTokens, rope_index


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


class GridLayout:
    """Qwen-VL's image-token layout for ``runtime.prompt.PromptBuilder``: one ``<|image_pad|>`` becomes
    t*h*w / merge^2 of them (the image's grid), the decoder's positions are M-RoPE's ``[3, 1, n]``."""

    def __init__(self, tokens: VisionTokens, merge_size: int):
        self.tokens, self.merge_size = tokens, merge_size

    def expand(self, ids: list[int], at: int, image) -> Prompt:
        if image is None or image.grid is None:
            raise PromptError("a Qwen-VL prompt needs its image's grid to lay out the image tokens")
        expanded = expand_image_tokens(ids, self.tokens.image, [image.grid], self.merge_size)       # [n]
        positions, delta = rope_index(expanded[None], np.asarray([image.grid]), self.tokens, self.merge_size)
        count = image_token_count(image.grid, self.merge_size)
        return Prompt(expanded, at, at + count, positions, int(delta[0, 0]))                  # positions [3, 1, n]
