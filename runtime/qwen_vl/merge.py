"""Image features onto the prompt's image rows, in numpy (what transformers' ``masked_scatter`` does).

    inputs_embeds [B, S, C], image rows (input_ids == <|image_pad|>) in prompt order
      <- image_features [T, C]           row k of the features -> the k-th image row
    deepstack_embeds [D, B, S, C], zeros
      <- deepstack_features [D, T, C]    the same rows, for each DeepStack layer
"""
from __future__ import annotations

import numpy as np


class ImageRowsError(ValueError):
    """The prompt's image rows and the image features disagree in number."""


def scatter_image_rows(inputs_embeds: np.ndarray, image_rows: np.ndarray, features: np.ndarray) -> np.ndarray:
    """A copy of ``inputs_embeds [B, S, C]`` with the ``image_rows [B, S]`` (bool) replaced by ``features [T, C]``."""
    _check(image_rows, features)
    out = inputs_embeds.copy()
    out[image_rows] = features.astype(out.dtype)
    return out


def deepstack_rows(image_rows: np.ndarray, features: np.ndarray) -> np.ndarray:
    """``features [D, T, C]`` on ``image_rows [B, S]`` -> ``[D, B, S, C]``, zeros elsewhere."""
    _check(image_rows, features[0] if len(features) else np.zeros((int(image_rows.sum()), 0)))
    d, _, c = features.shape
    out = np.zeros((d, *image_rows.shape, c), dtype=features.dtype)
    out[:, image_rows] = features
    return out


def _check(image_rows: np.ndarray, features: np.ndarray) -> None:
    if int(image_rows.sum()) != features.shape[0]:
        raise ImageRowsError(f"the prompt has {int(image_rows.sum())} image tokens but the image gave "
                             f"{features.shape[0]} features")
