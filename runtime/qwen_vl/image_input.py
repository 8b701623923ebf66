"""Qwen-VL's ``ImageInput`` (``runtime/image_input.py``): an image -> the vision graph's feeds, at its own size.

    picture --image_patches--> patches [N, C*T*P*P], grid (t, h, w) --vision_feeds--> feeds (every index
    tensor from the grid alone); key = the patches and the grid; tokens = t*h*w / merge^2; the box is the
    whole picture (Qwen resizes it, never crops); its tokens lie on the merged grid (h / merge, w / merge)
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from graphs.qwen_manifest import QwenManifest
from runtime.errors import BundleError
from runtime.image_input import PreparedImage, mean_colour
from runtime.images import load_image

from .image import QwenImageSpec, image_patches
from .layout import image_token_count
from .vision_feeds import VisionSpec, vision_feeds


class QwenImages:
    def __init__(self, image_spec: QwenImageSpec, vision_spec: VisionSpec):
        self.image_spec, self.vision_spec = image_spec, vision_spec

    @classmethod
    def from_bundle(cls, folder: Path, manifest: QwenManifest) -> "QwenImages":
        path = Path(folder) / manifest.files["preprocessor_config"]
        try:
            config = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BundleError(f"{path} is not a readable preprocessor config: {e}") from None
        if not isinstance(config, dict):
            raise BundleError(f"{path} is not a preprocessor config: a JSON object was expected")
        vision = VisionSpec(**{k: manifest.vision.get(k) for k in ("patch_size", "merge_size", "window_size",
                                                                    "position_grid_side")})
        return cls(QwenImageSpec.from_config(config), vision)

    def prepare(self, picture: Image.Image) -> PreparedImage:
        patches, grid = image_patches(picture, self.image_spec)                 # [N, CTPP], (t, h, w)
        feeds = vision_feeds(patches, grid, self.vision_spec)
        key = patches.tobytes() + np.asarray(grid, dtype=np.int64).tobytes()
        return PreparedImage(feeds, key, image_token_count(grid, self.vision_spec.merge_size),
                             (0.0, 0.0, float(picture.width), float(picture.height)),
                             (picture.width, picture.height), grid)

    def blank(self, blank_image, like: PreparedImage) -> PreparedImage:
        """``blank_image``, or (None) an image of the normalisation's mean colour at ``like``'s size (the same
        grid, so the same prompt length and positions)."""
        if blank_image is None:
            blank_image = Image.new("RGB", like.size, mean_colour(self.image_spec.image_mean))
        return self.prepare(load_image(blank_image))

    def map_grid(self, prepared: PreparedImage) -> tuple[int, int, bool]:
        """(rows, cols, no CLS) of the merged grid: ``maps[l]`` is ``[h / merge, w / merge]`` (one frame)."""
        _, h, w = prepared.grid
        m = self.vision_spec.merge_size
        return h // m, w // m, False
