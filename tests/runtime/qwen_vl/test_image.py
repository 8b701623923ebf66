"""runtime.qwen_vl.image against transformers' slow Qwen2VLImageProcessor: bit-for-bit patches and grids."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from runtime.errors import BundleError, ImageError
from runtime.qwen_vl.image import MAX_ASPECT_RATIO, QwenImageSpec, image_patches, smart_resize
from tests.conftest import random_image

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
SPECS = {   # the tiny fixtures' settings and Qwen2.5-VL's real ones
    "tiny-qwen2.5-vl": QwenImageSpec(14, 2, 2, 4 * 28 * 28, 48 * 28 * 28, CLIP_MEAN, CLIP_STD),
    "tiny-qwen3-vl": QwenImageSpec(16, 2, 2, 4 * 32 * 32, 48 * 32 * 32, (0.5,) * 3, (0.5,) * 3),
    "qwen2.5-vl": QwenImageSpec(14, 2, 2, 56 * 56, 28 * 28 * 1280, CLIP_MEAN, CLIP_STD),
}
# (height, width): square at one merged patch, odd, non-square both ways, upscaled to min_pixels,
# downscaled to max_pixels, and the extreme aspect ratio transformers still takes (200:1).
SIZES = [(32, 32), (57, 83), (83, 57), (33, 35), (99, 101), (300, 200), (37, 640), (1000, 41), (32, 6400)]


def _reference(spec: QwenImageSpec, image: Image.Image):
    from transformers import Qwen2VLImageProcessor

    processor = Qwen2VLImageProcessor(min_pixels=spec.min_pixels, max_pixels=spec.max_pixels,
                                      patch_size=spec.patch_size, merge_size=spec.merge_size,
                                      temporal_patch_size=spec.temporal_patch_size,
                                      image_mean=list(spec.image_mean), image_std=list(spec.image_std))
    out = processor(images=image, return_tensors="np")
    return out["pixel_values"], tuple(int(v) for v in out["image_grid_thw"][0])


@pytest.mark.parametrize("name", SPECS)
def test_patches_and_grid_equal_transformers_bit_for_bit(name):
    spec = SPECS[name]
    for i, (h, w) in enumerate(SIZES):
        image = Image.fromarray(random_image(i, h, w))
        patches, grid = image_patches(image, spec)
        want, want_grid = _reference(spec, image)
        assert grid == want_grid, (name, h, w)
        assert patches.dtype == np.float32 and patches.shape == want.shape, (name, h, w)
        assert np.array_equal(patches, want), (name, h, w, np.abs(patches - want).max())
        t, gh, gw = grid
        assert patches.shape == (t * gh * gw, 3 * 2 * spec.patch_size ** 2)
        area = gh * gw * spec.patch_size ** 2
        # max_pixels is no bound where a side is clamped at one merged patch (transformers' max(factor, ...))
        assert spec.min_pixels <= area and (area <= spec.max_pixels or min(gh, gw) == spec.merge_size)


def test_grey_and_transparent_images_are_converted_as_transformers_does():
    spec = SPECS["tiny-qwen2.5-vl"]
    rgba = Image.fromarray(np.dstack([random_image(3, 50, 70), np.full((50, 70), 90, np.uint8)]), "RGBA")
    for image in (rgba, rgba.convert("L"), rgba.convert("P")):
        patches, _ = image_patches(image, spec)
        assert np.array_equal(patches, _reference(spec, image)[0]), image.mode


def test_smart_resize_rounds_half_to_even_as_python_does():
    spec = SPECS["tiny-qwen2.5-vl"]
    # 70 / 28 = 2.5 -> 2 (half to even), 98 / 28 = 3.5 -> 4
    assert smart_resize(70, 98, spec) == (56, 112)


def test_an_image_smaller_than_one_merged_patch_is_refused():
    spec = SPECS["tiny-qwen2.5-vl"]
    for h, w in ((27, 100), (100, 27), (1, 1)):
        with pytest.raises(ImageError, match="at least one merged patch, 28x28"):
            image_patches(Image.fromarray(random_image(0, h, w)), spec)
    # transformers 4.57 upsamples such an image instead (older Qwen processors refused it too)
    assert _reference(spec, Image.fromarray(random_image(0, 27, 100)))[1][0] == 1


def test_an_extreme_aspect_ratio_is_refused_as_transformers_refuses_it():
    spec = SPECS["tiny-qwen3-vl"]
    image = Image.fromarray(random_image(0, 32, 32 * MAX_ASPECT_RATIO + 1))
    with pytest.raises(ImageError, match="aspect ratio of at most 200"):
        image_patches(image, spec)
    with pytest.raises(ValueError, match="aspect ratio must be smaller than 200"):
        _reference(spec, image)


def test_not_an_image_is_refused():
    with pytest.raises(ImageError, match="PIL.Image.Image"):
        image_patches(np.zeros((64, 64, 3), np.uint8), SPECS["tiny-qwen3-vl"])


def test_spec_from_a_checkpoints_preprocessor_config(checkpoint_dir):
    for size in ("tiny-qwen2.5-vl", "tiny-qwen3-vl"):
        config = json.loads((checkpoint_dir(size) / "preprocessor_config.json").read_text())
        assert QwenImageSpec.from_config(config) == SPECS[size]
    # a file with `size` alone (as Qwen3-VL's real one, written for the fast processor) is read by `size`
    only_size = {"size": {"shortest_edge": 65536, "longest_edge": 16777216}, "patch_size": 16,
                 "image_mean": [0.5] * 3, "image_std": [0.5] * 3}
    spec = QwenImageSpec.from_config(only_size)
    assert (spec.min_pixels, spec.max_pixels, spec.factor) == (65536, 16777216, 32)


@pytest.mark.parametrize("bad", [{"do_normalize": False}, {"patch_size": 0}, {"image_std": [0.5, 0, 0.5]},
                                 {"min_pixels": 10_000, "max_pixels": 100}])
def test_unsupported_preprocessor_configs_are_bundle_errors(bad):
    with pytest.raises(BundleError):
        QwenImageSpec.from_config(bad)
