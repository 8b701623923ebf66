"""What one call returns."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass(frozen=True)
class Timings:
    """Seconds spent in each phase of one answer (0.0 where a phase was skipped or cached)."""

    vision: float = 0.0
    prefill: float = 0.0
    confidence_step: float = 0.0
    rescaled_step: float = 0.0
    decode: float = 0.0

    @property
    def total(self) -> float:
        return self.vision + self.prefill + self.confidence_step + self.rescaled_step + self.decode


@dataclass(frozen=True)
class ImageInfluence:
    """How much the image moved the first answer token ("Hidden in Plain Sight"'s blind test).

    Both distributions are the unsteered (alpha = 1) first-token softmax, with the
    real image and with a blank image of the CLIP mean colour.
    """

    tv_distance: float          # 0.5 * sum |p_image - p_blank|, in [0, 1]
    answer_changed: bool        # greedy first token differs between the two
    blank_top_token: int
    blank_confidence: float


@dataclass(frozen=True, eq=False)
class AttentionMaps:
    """Where the last prompt token looked in the image, per decoder layer (``return_attention=True``).

    The decoder's attention of the last prompt row (the one whose logits give the first
    answer token) over the image-token keys, averaged over heads, after the softmax (so
    with the pass's alpha applied), as a fraction of that row's whole attention.

    ``maps[l, r, c]`` is the patch in row r, column c of the vision tower's grid over
    the picture the model sees: the image after preprocessing (pad to square if the
    bundle does, resize, centre crop), row 0 at its top, column 0 at its left.  ``box``
    is that picture's rectangle on the original image, in its pixels ``(left, top,
    right, bottom)``: resize a map to the box's size and paste it at (left, top) to
    draw it over the original.  The box may extend past the image (padding, or a crop
    larger than the resized image).

    With a CLS token kept among the image tokens (LLaVA's "full" feature strategy),
    its attention is in ``cls``, not in ``maps`` (it has no place on the grid); else
    ``cls`` is None.  ``image_share[l]`` is the layer's total attention on image
    tokens, CLS included: ``maps[l].sum() + (cls[l] if cls is not None else 0)``.
    """

    maps: np.ndarray                         # float32 [num_layers, grid_h, grid_w]
    image_share: np.ndarray                  # float32 [num_layers]
    cls: np.ndarray | None = None            # float32 [num_layers], or None
    box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)

    @property
    def scale(self) -> float | list | None:
        """The former name of ``alpha``, kept so existing callers keep working."""
        return self.alpha

    def to_dict(self) -> dict:
        return {"maps": self.maps.tolist(), "image_share": self.image_share.tolist(),
                "cls": None if self.cls is None else self.cls.tolist(), "box": list(self.box)}


@dataclass(frozen=True)
class Answer:
    text: str
    token_ids: list[int]                 # generated ids, without the end-of-sequence token
    confidence: float | None             # max softmax of the first token with alpha = 1 (None for ScalingVis)
    alpha: float | list | None           # the alpha applied to the last prompt token(s); None = unsteered
    steering: str                        # "none", "scalingvis" or "adaptvis"
    timings: Timings = field(default_factory=Timings)
    prompt_tokens: int = 0
    image_influence: ImageInfluence | None = None
    first_token_probs: object = field(default=None, repr=False, compare=False)  # [V] float32, steered pass
    # return_attention=True: {"confidence": AttentionMaps of the alpha = 1 pass, "rescaled": of the
    # pass with the chosen alpha}, holding the passes that ran (see VLM.answer); else None.
    attention: dict[str, AttentionMaps] | None = field(default=None, repr=False, compare=False)

    @property
    def scale(self) -> float | list | None:
        """The former name of ``alpha``, kept so existing callers keep working."""
        return self.alpha

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("first_token_probs")
        d["attention"] = None if self.attention is None else {k: v.to_dict() for k, v in self.attention.items()}
        d["timings"]["total"] = self.timings.total
        return d
