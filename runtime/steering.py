"""How the image-attention temperature is chosen: AdaptVis (confidence-gated) or ScalingVis (constant).

An alpha may be a scalar, a per-layer array [L] or a per-layer-per-head array
[L, H]; ``scale_tensor`` broadcasts it into the decoder's
``image_attention_scale`` input [1, L, H].  Every value must lie in
[ALPHA_MIN, ALPHA_MAX].
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Union

import numpy as np

from .errors import SteeringError

Alpha = Union[float, int, np.ndarray, list, tuple]
APPLY_TO = ("last_token", "after_image")   # last_token: the paper's default

# The papers' grids use alphas of 0.5 to 2.0.  [0.01, 100] leaves 50x room on either side of those
# for exploration, and keeps the scaled attention logits finite: 100 x a logit of up to 655 stays
# under fp16's largest value (65504).  Far outside it, float32 overflows too: 1e37 x a logit of 34
# is inf, and the softmax over it is NaN.
ALPHA_MIN, ALPHA_MAX = 0.01, 100.0


@dataclass(frozen=True, eq=False)
class ScalingVis:
    """One constant alpha, no confidence pass."""

    alpha: Alpha
    apply_to: str = "last_token"

    def __post_init__(self):
        check_alpha("alpha", self.alpha)
        _check_apply_to(self.apply_to)


@dataclass(frozen=True, eq=False)
class AdaptVis:
    """alpha = low if confidence < threshold else high (the paper's rule).

    ``round_confidence`` rounds the confidence to 2 decimals before comparing,
    as the reference code does; off by default.
    """

    low: Alpha = 0.5
    high: Alpha = 1.5
    threshold: float = 0.4
    round_confidence: bool = False
    apply_to: str = "last_token"

    def __post_init__(self):
        check_alpha("low", self.low)
        check_alpha("high", self.high)
        t = self.threshold
        if isinstance(t, bool) or not isinstance(t, (int, float, np.floating)) or not math.isfinite(t) or not 0 <= t <= 1:
            raise SteeringError(f"threshold must be a finite number in [0, 1], got {t!r}")
        _check_apply_to(self.apply_to)

    def choose(self, confidence: float) -> Alpha:
        c = round(confidence, 2) if self.round_confidence else confidence
        return self.low if c < self.threshold else self.high


def scale_tensor(alpha: Alpha, num_layers: int, num_heads: int) -> np.ndarray:
    """alpha (scalar, [L] or [L, H]) -> float32 [1, L, H]."""
    a = check_alpha("alpha", alpha)
    if a.ndim == 0:
        out = np.full((num_layers, num_heads), a, dtype=np.float32)
    elif a.shape == (num_layers,):
        out = np.repeat(a[:, None], num_heads, axis=1)
    elif a.shape == (num_layers, num_heads):
        out = a
    else:
        raise SteeringError(f"alpha must be a scalar, [num_layers]=[{num_layers}] or "
                            f"[num_layers, num_heads]=[{num_layers}, {num_heads}], got shape {list(a.shape)}")
    return np.ascontiguousarray(out, dtype=np.float32)[None]          # [1, L, H]


def describe(alpha: Alpha) -> float | list:
    """A JSON-friendly form of an alpha."""
    a = np.asarray(alpha, dtype=np.float64)
    return float(a) if a.ndim == 0 else a.tolist()


def brief(alpha: Alpha) -> str:
    """A scalar as itself; an array by its extremes (an [L, H] alpha may hold a thousand values)."""
    a = np.asarray(alpha, dtype=np.float64)
    if a.ndim == 0:
        return f"{float(a):g}"
    return f"an array of shape {list(a.shape)} with values from {np.min(a):g} to {np.max(a):g}" \
        if np.all(np.isfinite(a)) else f"an array of shape {list(a.shape)} holding NaN or inf"


def check_alpha(name: str, alpha: Alpha) -> np.ndarray:
    """``alpha`` as float32 if it is a scalar, [L] or [L, H] array of values in [ALPHA_MIN, ALPHA_MAX];
    else SteeringError naming it ``name``."""
    if isinstance(alpha, bool):
        raise SteeringError(f"{name} must be a positive number or array, got a bool")
    try:
        a = np.asarray(alpha, dtype=np.float64)
    except (TypeError, ValueError):
        raise SteeringError(f"{name} must be a positive number or array of numbers, got {type(alpha).__name__}") from None
    if a.ndim > 2 or a.size == 0:
        raise SteeringError(f"{name} must be a scalar, [L] or [L, H] array, got shape {list(a.shape)}")
    if not np.all(np.isfinite(a)):
        raise SteeringError(f"{name} must be finite, got {brief(a)}")
    if not np.all((a >= ALPHA_MIN) & (a <= ALPHA_MAX)):
        raise SteeringError(f"{name} must lie in [{ALPHA_MIN:g}, {ALPHA_MAX:g}] (the papers use 0.5 to 2.0; "
                            f"far beyond it scaled attention logits overflow), got {brief(a)}")
    return a.astype(np.float32)


def _check_apply_to(apply_to: str) -> None:
    if apply_to not in APPLY_TO:
        raise SteeringError(f"apply_to must be one of {APPLY_TO}, got {apply_to!r}")


# The paper's LLaVA-1.5 setting for WhatsUp Controlled_Images_A: the default without a calibration.json.
PAPER_DEFAULT = AdaptVis(low=0.5, high=1.5, threshold=0.4)
