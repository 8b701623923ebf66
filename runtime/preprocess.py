"""RGB PIL image -> ``pixel_values``, bit-for-bit what ``CLIPImageProcessor`` gives.

Mirrors transformers' ``CLIPImageProcessor.preprocess`` step by step:
convert to RGB -> resize (PIL, on uint8) so the short side is
``resize_shortest_edge`` -> centre crop (zero-padding if too small) ->
rescale (in float64, then float32) -> normalise (float32) -> channels first.
With ``pad_to_square`` the image is first padded to a square with the mean
colour, as LLaVA's ``expand2square`` ("pad" aspect mode) does.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image

from graphs.manifest import Preprocessing
from runtime.errors import BundleError, ImageError

# Largest intermediate image (padded square, or resized image) we will build,
# in pixels.  2**27 px is ~400 MB as uint8 RGB; only absurd aspect ratios get
# near it (a 1x10000 strip resized to a 336 short side is 336x3360000).
MAX_WORK_PIXELS = 2 ** 27

_RESAMPLE_CODES = (0, 1, 2, 3, 4, 5)   # NEAREST, LANCZOS, BILINEAR, BICUBIC, BOX, HAMMING


def pixel_values(image: Image.Image, spec: Preprocessing, *,
                 max_work_pixels: int = MAX_WORK_PIXELS) -> np.ndarray:
    """float32 ``[1, 3, crop_height, crop_width]`` (resized size if ``do_center_crop`` is off)."""
    _check_spec(spec)
    if not isinstance(image, Image.Image):
        raise ImageError(f"expected a PIL.Image.Image (see runtime.images.load_image); "
                         f"got {type(image).__name__}")
    if image.width <= 0 or image.height <= 0:
        raise ImageError(f"expected a non-empty image; got {image.width}x{image.height} (WxH)")
    if image.mode != "RGB":                          # transformers' convert_to_rgb
        image = image.convert("RGB")
    if spec.pad_to_square:
        side = max(image.size)
        _check_work((side, side), max_work_pixels, "padding to a square")
        image = expand_to_square(image, tuple(int(x * 255) for x in spec.image_mean))

    size = resized_size(image.height, image.width, spec.resize_shortest_edge)  # (h, w)
    _check_work(size[::-1], max_work_pixels, f"resizing {image.width}x{image.height}")
    image = image.resize(size[::-1], resample=spec.resample, reducing_gap=None)
    pixels = np.asarray(image)                                     # [h, w, 3] uint8
    if spec.do_center_crop:
        pixels = center_crop(pixels, spec.crop_height, spec.crop_width)  # [ch, cw, 3] uint8

    scaled = (pixels.astype(np.float64) * spec.rescale_factor).astype(np.float32)  # [h, w, 3]
    mean = np.array(spec.image_mean, dtype=np.float32)             # [3]
    std = np.array(spec.image_std, dtype=np.float32)               # [3]
    normed = (scaled - mean) / std                                 # [h, w, 3] float32
    return np.ascontiguousarray(normed.transpose(2, 0, 1)[None])   # [1, 3, h, w]


def crop_box(width: int, height: int, spec: Preprocessing) -> tuple[float, float, float, float]:
    """Where ``pixel_values`` of a ``width`` x ``height`` image lie on that image, in its pixels:
    ``(left, top, right, bottom)`` of the (square-padded,) resized and cropped picture the model sees.

    PIL's resize maps edges to edges, so this is a linear map of the crop's rectangle in the
    resized image.  Parts may lie outside ``[0, width] x [0, height]``: the padding of
    ``pad_to_square``, or a crop larger than the resized image (zero-padded).
    """
    ox = oy = 0
    if spec.pad_to_square and width != height:
        side = max(width, height)
        ox, oy = (side - width) // 2, (side - height) // 2          # as expand_to_square pastes it
        width = height = side
    rh, rw = resized_size(height, width, spec.resize_shortest_edge)
    if spec.do_center_crop:
        top, left = (rh - spec.crop_height) // 2, (rw - spec.crop_width) // 2   # as center_crop (also when padding)
        bottom, right = top + spec.crop_height, left + spec.crop_width
    else:
        top, left, bottom, right = 0, 0, rh, rw
    sx, sy = width / rw, height / rh
    return (left * sx - ox, top * sy - oy, right * sx - ox, bottom * sy - oy)


def expand_to_square(image: Image.Image, background: tuple[int, ...]) -> Image.Image:
    """LLaVA's ``expand2square``: paste centred (offset floored) onto a square canvas."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), background)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def resized_size(height: int, width: int, shortest_edge: int) -> tuple[int, int]:
    """``get_resize_output_image_size(default_to_square=False)``: long side truncated."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = shortest_edge, int(shortest_edge * long / short)
    return (new_long, new_short) if width <= height else (new_short, new_long)


def center_crop(pixels: np.ndarray, crop_height: int, crop_width: int) -> np.ndarray:
    """transformers' ``center_crop`` on ``[h, w, c]``: offsets floored, zero-pad if small."""
    height, width = pixels.shape[:2]
    top = (height - crop_height) // 2
    left = (width - crop_width) // 2
    if top >= 0 and left >= 0:
        return pixels[top:top + crop_height, left:left + crop_width]    # [ch, cw, c]
    # Too small on some side: centre it on a zero canvas (pad offsets rounded up),
    # then crop that canvas.
    new_height, new_width = max(crop_height, height), max(crop_width, width)
    top_pad = math.ceil((new_height - height) / 2)
    left_pad = math.ceil((new_width - width) / 2)
    canvas = np.zeros((new_height, new_width) + pixels.shape[2:], pixels.dtype)  # [H', W', c]
    canvas[top_pad:top_pad + height, left_pad:left_pad + width] = pixels
    top, left = top + top_pad, left + left_pad
    return canvas[max(0, top):min(new_height, top + crop_height),
                  max(0, left):min(new_width, left + crop_width)]           # [ch, cw, c]


def _check_work(size: tuple[int, int], limit: int, step: str) -> None:
    width, height = size
    if width * height > limit:
        raise ImageError(f"expected an image whose aspect ratio keeps {step} under {limit} "
                         f"pixels; it would need {width}x{height} (WxH)")


def _check_spec(spec: Preprocessing) -> None:
    sizes = (spec.resize_shortest_edge, spec.crop_height, spec.crop_width)
    if not all(isinstance(v, int) and v > 0 for v in sizes):
        raise BundleError(f"preprocessing sizes must be positive integers; got {sizes}")
    if spec.resample not in _RESAMPLE_CODES:
        raise BundleError(f"preprocessing resample must be a PIL code in {_RESAMPLE_CODES}; "
                          f"got {spec.resample!r}")
    if len(spec.image_mean) != 3 or len(spec.image_std) != 3 or 0 in spec.image_std:
        raise BundleError(f"preprocessing mean/std must have 3 entries, std non-zero; got "
                          f"{spec.image_mean}, {spec.image_std}")
