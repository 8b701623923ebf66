"""A stand-in model with known answers, for testing the calibration machinery.

The tiny test bundles have random weights (gibberish answers, accuracy ~0), so they
cannot show that the grid search picks the right cell.  ``FakeVLM`` answers like a model
that AdaptVis helps: each image gets a fixed confidence from its file name; an item is
answered correctly only with alpha_low = 0.5 when its confidence is below 0.3, and only
with alpha_high = 1.5 otherwise; the unsteered answer is always wrong.  The gold word
comes from the file name (``<obj>_<relation>_<ref>.png``).
"""
from __future__ import annotations

import dataclasses
import hashlib
from types import SimpleNamespace
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from PIL import Image

import runtime
from runtime.answer import Answer, AttentionMaps, ImageInfluence

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
        # what the Runner keys its cache by (a loaded VLM's Bundle.model_sha256)
        self.bundle = SimpleNamespace(model_sha256=hashlib.sha256(b"fake " + bytes(self.folder)).hexdigest(),
                                      calibration=None)
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
                      else conf, alpha=alpha, steering="none" if steering is None else type(steering).__name__.lower(),
                      image_influence=infl)


class AttentionFakeVLM(FakeVLM):
    """``FakeVLM`` that can report attention maps (as a bundle with attention outputs does).

    The maps: ``layers`` layers on a ``grid`` x ``grid`` patch grid over the whole image.  At
    alpha = 1 (the "confidence" pass) and with alpha_low, attention is spread evenly over the
    patches (so the share inside a box is its area fraction); with alpha_high all of it sits on
    the patch holding the centre of the item's box A (``boxes``: image file name -> boxes).
    """

    def __init__(self, folder: Path, boxes: dict, grid: int = 32, layers: int = 3):
        super().__init__(folder)
        self.boxes = boxes
        self.grid = grid
        self.layers = layers
        self.manifest = SimpleNamespace(has_attention_outputs=True)
        self.attention_calls = 0

    def answer(self, image, question, steering=None, max_new_tokens=16, measure_image_influence=False,
               blank_image=None, return_attention=False):
        ans = super().answer(image, question, steering, max_new_tokens, measure_image_influence, blank_image)
        if not return_attention:
            return ans
        self.attention_calls += 1
        name = Path(image).name
        with Image.open(image) as im:
            w, h = im.size
        g, L = self.grid, self.layers
        uniform = np.full((L, g, g), 0.5 / (g * g), dtype=np.float32)
        maps = {"confidence": uniform}
        if ans.alpha == HIGH_ALPHA:
            x0, y0, x1, y1 = self.boxes[name]["A"]
            one = np.zeros((L, g, g), dtype=np.float32)
            one[:, int((y0 + y1) / 2 / h * g), int((x0 + x1) / 2 / w * g)] = 0.7
            maps["rescaled"] = one
        else:
            maps["rescaled"] = uniform
        att = {k: AttentionMaps(maps=m, image_share=m.sum(axis=(1, 2)), box=(0.0, 0.0, float(w), float(h)))
               for k, m in maps.items()}
        return dataclasses.replace(ans, attention=att)
