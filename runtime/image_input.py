"""An image, made ready for a family's vision graph: its inputs, the key it is cached by, its token layout.

    PIL image --prepare--> PreparedImage: inputs (LLaVA: pixel_values [1, 3, H, W]; Qwen: the vision
                           graph's feeds, runtime/qwen_vl/image_input.py), key, tokens, grid, box
    blank(blank_image, like) --> the image-influence pass's blank image, prepared the same way
    map_grid(prepared)       --> (rows, cols, CLS kept): where its image tokens lie on the picture

``VLM`` reads only these, so the schedule in ``runtime/model.py`` is the same for every family.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from graphs.manifest import Manifest

from .attention import image_grid
from .images import load_image
from .preprocess import crop_box, pixel_values


@dataclass(frozen=True, eq=False)
class PreparedImage:
    inputs: object                       # what the sessions' ``features`` takes: pixel_values, or the vision feeds
    key: bytes                           # the image's content, as its features and image prefix are cached by
    tokens: int                          # image tokens the prompt holds for it
    box: tuple[float, float, float, float]   # the picture the model sees, on the original image (AttentionMaps.box)
    size: tuple[int, int]                # the original image's (width, height)
    grid: tuple[int, int, int] | None = None     # Qwen: (t, h, w) in patches; None: the family's fixed grid


class ClipImages:
    """LLaVA: CLIP's fixed-size pixel_values; every image has the manifest's grid of tokens."""

    def __init__(self, manifest: Manifest):
        self.manifest = manifest
        self.spec = manifest.preprocessing

    def prepare(self, picture: Image.Image) -> PreparedImage:
        pixels = pixel_values(picture, self.spec)                                         # [1, 3, H, W]
        return PreparedImage(pixels, pixels.tobytes(), self.manifest.image_tokens_per_image,
                             crop_box(picture.width, picture.height, self.spec), (picture.width, picture.height))

    def blank(self, blank_image, like: PreparedImage) -> PreparedImage:
        """``blank_image``, or (None) an image of the CLIP mean colour at the crop size."""
        if blank_image is None:
            blank_image = Image.new("RGB", (self.spec.crop_width, self.spec.crop_height),
                                    tuple(int(m * 255) for m in self.spec.image_mean))
        return self.prepare(load_image(blank_image))

    def map_grid(self, prepared: PreparedImage) -> tuple[int, int, bool]:
        return image_grid(self.manifest)


def mean_colour(mean) -> tuple[int, int, int]:
    return tuple(int(np.clip(m, 0, 1) * 255) for m in mean)
