"""RGB PIL image -> Qwen-VL's flattened patches and grid, bit-for-bit what ``Qwen2VLImageProcessor`` gives.

Mirrors transformers' slow (PIL + numpy) ``Qwen2VLImageProcessor._preprocess`` for one image:

    convert to RGB -> smart resize (PIL bicubic on uint8) to (h, w), both multiples of patch x merge,
    h x w within [min_pixels, max_pixels] -> rescale (float64, then float32) -> normalise (float32)
    -> channels first [C, h, w] -> the frame repeated to the temporal patch [T, C, h, w]
    -> patches in merge-block order: [t, h/(P m), w/(P m), m, m, C, T, P, P] -> [N, C*T*P*P]

with N = t * (h / P) * (w / P) and grid (t, h / P, w / P).  Qwen2.5-VL: P = 14, C*T*P*P = 1176;
Qwen3-VL: P = 16, 1536.  The decoder sees N / m^2 image tokens.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from runtime.errors import BundleError, ImageError

# transformers' own limit (smart_resize raises above it): a 1 x 201 strip has no usable 2-D layout.
MAX_ASPECT_RATIO = 200


@dataclass(frozen=True)
class QwenImageSpec:
    """What ``preprocessor_config.json`` says, with the reason for each default."""
    patch_size: int
    merge_size: int
    temporal_patch_size: int
    min_pixels: int
    max_pixels: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    rescale_factor: float = 1 / 255
    resample: int = 3                 # PIL bicubic, Qwen's processors' default

    @property
    def factor(self) -> int:
        """The side of one merged patch in pixels: both resized sides are multiples of it."""
        return self.patch_size * self.merge_size

    @classmethod
    def from_config(cls, config: dict) -> "QwenImageSpec":
        """From ``preprocessor_config.json``.  ``min_pixels``/``max_pixels`` win over ``size``, as in
        transformers; a file with ``size`` alone is read as the fast processor reads it (transformers 4.57's
        slow one would silently fall back to its defaults)."""
        for flag in ("do_resize", "do_rescale", "do_normalize", "do_convert_rgb"):
            if config.get(flag, True) is not True:
                raise BundleError(f"preprocessor_config.json: {flag}={config[flag]!r} is not supported (expected true)")
        size = config.get("size") or {}
        spec = cls(patch_size=int(config.get("patch_size", 14)), merge_size=int(config.get("merge_size", 2)),
                   temporal_patch_size=int(config.get("temporal_patch_size", 2)),
                   min_pixels=int(config.get("min_pixels") or size.get("shortest_edge", 56 * 56)),
                   max_pixels=int(config.get("max_pixels") or size.get("longest_edge", 28 * 28 * 1280)),
                   image_mean=tuple(config.get("image_mean", (0.48145466, 0.4578275, 0.40821073))),
                   image_std=tuple(config.get("image_std", (0.26862954, 0.26130258, 0.27577711))),
                   rescale_factor=float(config.get("rescale_factor", 1 / 255)),
                   resample=int(config.get("resample", 3)))
        spec.check()
        return spec

    def check(self) -> None:
        sizes = (self.patch_size, self.merge_size, self.temporal_patch_size, self.min_pixels, self.max_pixels)
        if not all(isinstance(v, int) and v > 0 for v in sizes) or self.min_pixels > self.max_pixels:
            raise BundleError(f"Qwen image preprocessing: patch, merge, temporal patch, min/max pixels must be "
                              f"positive integers with min <= max; got {sizes}")
        if len(self.image_mean) != 3 or len(self.image_std) != 3 or 0 in self.image_std:
            raise BundleError(f"Qwen image preprocessing: mean/std must have 3 entries, std non-zero; "
                              f"got {self.image_mean}, {self.image_std}")


def smart_resize(height: int, width: int, spec: QwenImageSpec) -> tuple[int, int]:
    """transformers' ``smart_resize``: (h, w) multiples of ``spec.factor``, area within [min, max] pixels.

    Python's ``round`` (half to even) as in transformers.  Refuses, as ``ImageError``, an image with
    a side under one merged patch (transformers 4.57 upsamples it; the Qwen processors before it
    refused it too) and an aspect ratio over ``MAX_ASPECT_RATIO`` (transformers raises a bare ValueError).
    """
    factor = spec.factor
    if height < factor or width < factor:
        raise ImageError(f"expected an image of at least one merged patch, {factor}x{factor} pixels (WxH); "
                         f"got {width}x{height}")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ImageError(f"expected an aspect ratio of at most {MAX_ASPECT_RATIO}:1; got {width}x{height} (WxH), "
                         f"{max(height, width) / min(height, width):.1f}:1")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > spec.max_pixels:
        beta = math.sqrt((height * width) / spec.max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < spec.min_pixels:
        beta = math.sqrt(spec.min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def image_patches(image: Image.Image, spec: QwenImageSpec) -> tuple[np.ndarray, tuple[int, int, int]]:
    """float32 ``[N, C*T*P*P]`` flattened patches and the grid ``(t, h, w)`` in patches (t = 1 for an image)."""
    if not isinstance(image, Image.Image):
        raise ImageError(f"expected a PIL.Image.Image (see runtime.images.load_image); got {type(image).__name__}")
    if image.mode != "RGB":                                         # transformers' convert_to_rgb
        image = image.convert("RGB")
    height, width = smart_resize(image.height, image.width, spec)
    resized = image.resize((width, height), resample=spec.resample, reducing_gap=None)
    pixels = np.asarray(resized)                                    # [h, w, 3] uint8
    scaled = (pixels.astype(np.float64) * spec.rescale_factor).astype(np.float32)   # [h, w, 3]
    mean = np.array(spec.image_mean, dtype=np.float32)              # [3]
    std = np.array(spec.image_std, dtype=np.float32)                # [3]
    frame = ((scaled - mean) / std).transpose(2, 0, 1)              # [C, h, w] float32
    return flatten_patches(frame, spec)


def flatten_patches(frame: np.ndarray, spec: QwenImageSpec) -> tuple[np.ndarray, tuple[int, int, int]]:
    """One normalised frame ``[C, h, w]`` -> ``[N, C*T*P*P]`` in the vision tower's merge-block order."""
    channels, height, width = frame.shape
    p, m, t_patch = spec.patch_size, spec.merge_size, spec.temporal_patch_size
    grid_t, grid_h, grid_w = 1, height // p, width // p
    frames = np.broadcast_to(frame, (t_patch, channels, height, width))            # [T, C, h, w]
    blocks = frames.reshape(grid_t, t_patch, channels, grid_h // m, m, p, grid_w // m, m, p)
    blocks = blocks.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)   # [t, h/m, w/m, m, m, C, T, P, P]
    patches = np.ascontiguousarray(blocks).reshape(grid_t * grid_h * grid_w, channels * t_patch * p * p)
    return patches, (grid_t, grid_h, grid_w)
