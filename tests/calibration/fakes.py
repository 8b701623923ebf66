"""A stand-in model with known answers, for testing the calibration machinery.

The tiny test bundles have random weights (gibberish answers, accuracy ~0), so they
cannot show that the grid search picks the right cell.  ``FakeVLM`` answers like a model
that AdaptVis helps: each image gets a fixed confidence from its file name; an item is
answered correctly only with alpha_low = 0.5 when its confidence is below 0.3, and only
with alpha_high = 1.5 otherwise; the unsteered answer is always wrong.  The gold word
comes from the file name (``<obj>_<relation>_<ref>.png``).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import runtime
from runtime.answer import Answer, ImageInfluence

LOW_ALPHA, HIGH_ALPHA, SPLIT = 0.5, 1.5, 0.3
GOLD = {"on": "on", "under": "under", "left_of": "left", "right_of": "right"}


def confidence_of(name: str) -> float:
    """A fixed pseudo-random confidence in [0.05, 0.95) per image file name."""
    h = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) / 16 ** 8
    return round(0.05 + 0.9 * h, 4)


class FakeVLM:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "manifest.json").write_text(json.dumps({"fake": True}))
        self.calls: list[tuple[str, str]] = []          # (image name, steering kind)

    def answer(self, image, question, steering=None, max_new_tokens=16, measure_image_influence=False, blank_image=None):
        if not isinstance(image, (str, Path)):            # a blank image made in memory
            name = "blank"
        else:
            if not Path(image).is_file():
                raise runtime.errors.ImageError(f"expected an image file; no such file: {str(image)!r}")
            name = Path(image).name
        conf = confidence_of(name)
        stem = name.rsplit(".", 1)[0].split("_")
        gold = GOLD.get("_".join(stem[1:-1]), "none")
        want = LOW_ALPHA if conf < SPLIT else HIGH_ALPHA
        if steering is None:
            alpha = None
        elif isinstance(steering, runtime.ScalingVis):
            alpha = steering.alpha
        else:
            alpha = steering.choose(conf)
        self.calls.append((name, type(steering).__name__))
        text = gold.capitalize() if alpha == want else "Nothing."
        infl = ImageInfluence(0.25, conf > 0.5, 7, 0.5) if measure_image_influence else None
        return Answer(text=text, token_ids=[1, 2], confidence=None if isinstance(steering, runtime.ScalingVis)
                      else conf, scale=alpha, steering="none" if steering is None else type(steering).__name__.lower(),
                      image_influence=infl)
