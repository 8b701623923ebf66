"""Turn whatever the caller hands us into one RGB ``PIL.Image.Image``.

Accepted inputs: a path (``str`` / ``pathlib.Path``), the bytes of an image file
(``bytes``: what an HTTP upload or a camera driver hands over; read exactly as that
file would be), a ``PIL.Image.Image``, or a ``uint8`` numpy array shaped ``[H, W]``,
``[H, W, 1]``, ``[H, W, 3]`` (RGB) or ``[H, W, 4]`` (RGBA).  Files get their EXIF orientation applied, as
``transformers.image_utils.load_image`` does; every mode is then made RGB with
``image.convert("RGB")``, as ``transformers.image_transforms.convert_to_rgb``
does (so alpha is dropped, not composited).  A float image (PIL mode ``F``, e.g. a
float TIFF) holding NaN or inf is refused: the conversion would silently make those
pixels black or white.  Anything wrong with the input raises
:class:`runtime.errors.ImageError`.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps

from runtime.errors import ImageError

# Largest image accepted, in pixels (width * height).  64 MP is well above any
# camera a robot carries (a 12 MP phone photo is 4000x3000) yet keeps a decoded
# RGB frame under ~200 MB.  Checked on the header, before any pixel is decoded,
# which is what makes it a decompression-bomb guard.  Deliberately independent
# of PIL's global ``Image.MAX_IMAGE_PIXELS``, which we never modify.
MAX_PIXELS = 64 * 1024 * 1024

ImageInput = Union[str, os.PathLike, bytes, Image.Image, np.ndarray]


def load_image(image: ImageInput, *, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Return ``image`` as a fully decoded RGB PIL image, or raise ``ImageError``."""
    if isinstance(image, (str, os.PathLike)):
        return _from_path(Path(image), max_pixels)
    if isinstance(image, (bytes, bytearray, memoryview)):
        if not len(image):
            raise ImageError("expected the bytes of an image file; got 0 bytes")
        return _from_file(io.BytesIO(bytes(image)), f"image data ({len(image)} bytes)", max_pixels)
    if isinstance(image, Image.Image):
        _check_size(image.size, max_pixels, "PIL image")
        return _to_rgb(_decode(image, "PIL image"), "PIL image")
    if isinstance(image, np.ndarray):
        return _to_rgb(_from_array(image, max_pixels), "array")
    raise ImageError(
        "expected a file path (str or pathlib.Path), an image file's bytes, a PIL.Image.Image or a "
        f"uint8 numpy array of shape [H, W], [H, W, 3] or [H, W, 4]; got {type(image).__name__}")


def _from_path(path: Path, max_pixels: int) -> Image.Image:
    shown = str(path) if len(str(path)) <= 200 else f"{str(path)[:100]}...({len(str(path))} characters)"
    try:
        exists, is_file = path.exists(), path.is_file()
    except (OSError, ValueError) as e:   # a name too long for the file system, a NUL byte in it...
        raise ImageError(f"expected an image file path; {shown!r} cannot be one: {type(e).__name__}: "
                         f"{getattr(e, 'strerror', None) or e}") from None
    if not exists:
        raise ImageError(f"expected an image file; no such file: {shown!r}")
    if not is_file:
        raise ImageError(f"expected an image file; {shown!r} is not a regular file")
    return _from_file(path, f"image file {str(path)!r}", max_pixels)


def _from_file(file, what: str, max_pixels: int) -> Image.Image:
    """A path or a binary file object -> RGB, upright: bomb guard on the header, full decode, EXIF."""
    try:
        with warnings.catch_warnings():
            # PIL's own bomb check only warns below 2x its limit: make it fatal.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened = Image.open(file)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise ImageError(f"{what} is too large (decompression bomb guard): {e}") from e
    except Image.UnidentifiedImageError as e:
        raise ImageError(f"expected a readable image file; {what} is not an image "
                         "format PIL can identify") from e
    except Exception as e:  # permissions, I/O errors, malformed headers
        raise ImageError(f"could not open {what}: {type(e).__name__}: {e}") from e
    with opened:
        _check_size(opened.size, max_pixels, what)
        decoded = _decode(opened, what)
        try:
            upright = ImageOps.exif_transpose(decoded)
        except Exception as e:  # malformed EXIF block
            raise ImageError(f"could not apply the EXIF orientation of {what}: "
                             f"{type(e).__name__}: {e}") from e
        return _to_rgb(upright, what)


def _decode(image: Image.Image, what: str) -> Image.Image:
    """Force a full decode so truncated / corrupt data fails here, not later."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
    except Exception as e:
        raise ImageError(f"expected a complete image; {what} could not be decoded "
                         f"(truncated or corrupt?): {type(e).__name__}: {e}") from e
    return image


def _check_size(size: tuple[int, int], max_pixels: int, what: str) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageError(f"expected a non-empty image; {what} is {width}x{height} (WxH)")
    if width * height > max_pixels:
        raise ImageError(f"expected at most {max_pixels} pixels; {what} is {width}x{height} "
                         f"(WxH) = {width * height} pixels")


def _from_array(array: np.ndarray, max_pixels: int) -> Image.Image:
    if array.dtype != np.uint8:
        raise ImageError(f"expected a uint8 array with values 0..255; got dtype {array.dtype} "
                         "(scale and cast it yourself, e.g. (x * 255).round().astype(np.uint8))")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]                                   # [H, W, 1] -> [H, W]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageError("expected an array of shape [H, W], [H, W, 1], [H, W, 3] or "
                         f"[H, W, 4] (channels last); got shape {array.shape}")
    height, width = array.shape[:2]
    _check_size((width, height), max_pixels, f"array of shape {array.shape}")
    return Image.fromarray(np.ascontiguousarray(array))       # uint8 -> mode L / RGB / RGBA


def _to_rgb(image: Image.Image, what: str) -> Image.Image:
    """``image.convert("RGB")``, exactly what Hugging Face's image processors do."""
    if image.mode == "F":
        values = np.asarray(image)                                # [H, W] float32
        bad = int(values.size - np.isfinite(values).sum())
        if bad:
            raise ImageError(f"expected finite pixel values; {what} is a float image (mode 'F') with {bad} NaN "
                             f"or infinite pixels of {values.size} (converting it would make them black or white)")
    try:
        return image.convert("RGB")
    except Exception as e:
        raise ImageError(f"could not convert {what} from mode {image.mode!r} to RGB: "
                         f"{type(e).__name__}: {e}") from e
