"""What one call returns."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


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


@dataclass(frozen=True)
class Answer:
    text: str
    token_ids: list[int]                 # generated ids, without the end-of-sequence token
    confidence: float | None             # max softmax of the first token with alpha = 1 (None for ScalingVis)
    scale: float | list | None           # the alpha applied to the last prompt token(s); None = unsteered
    steering: str                        # "none", "scalingvis" or "adaptvis"
    timings: Timings = field(default_factory=Timings)
    prompt_tokens: int = 0
    image_influence: ImageInfluence | None = None
    first_token_probs: object = field(default=None, repr=False, compare=False)  # [V] float32, steered pass

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("first_token_probs")
        d["timings"]["total"] = self.timings.total
        return d
