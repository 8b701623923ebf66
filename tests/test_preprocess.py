"""runtime.images / runtime.preprocess against transformers' CLIPImageProcessor."""
from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from graphs.manifest import Preprocessing
from runtime.errors import BundleError, ImageError
from runtime.images import MAX_PIXELS, load_image
from runtime.preprocess import center_crop, pixel_values, resized_size

transformers = pytest.importorskip("transformers")
from transformers import CLIPImageProcessor  # noqa: E402
from transformers.image_transforms import center_crop as hf_center_crop  # noqa: E402
from transformers.image_transforms import get_resize_output_image_size  # noqa: E402
from transformers.image_utils import load_image as hf_load_image  # noqa: E402

TOL = 1e-5
BICUBIC, BILINEAR = 3, 2
SPECS = {
    "30-bicubic": Preprocessing(30, 30, 30, resample=BICUBIC),
    "30-bilinear": Preprocessing(30, 30, 30, resample=BILINEAR),
    "336-bicubic": Preprocessing(336, 336, 336, resample=BICUBIC),
    "336-bilinear": Preprocessing(336, 336, 336, resample=BILINEAR),
    # short side 20 < crop 32x26: the crop has to zero-pad
    "pad-crop": Preprocessing(20, 32, 26, resample=BILINEAR,
                              image_mean=(0.5, 0.4, 0.3), image_std=(0.2, 0.25, 0.3)),
    "no-crop": Preprocessing(24, 24, 24, do_center_crop=False, resample=BICUBIC,
                             rescale_factor=1 / 127.5, image_mean=(0.5, 0.5, 0.5),
                             image_std=(0.5, 0.5, 0.5)),
}
# (width, height); no height of 1 or 3, which transformers mistakes for channels-first
SIZES = [(17, 331), (331, 17), (641, 37), (37, 641), (333, 333), (30, 30), (5, 9), (9, 5),
         (29, 31), (2, 2)]


def hf_pixels(image, spec: Preprocessing, **kwargs) -> np.ndarray:
    proc = CLIPImageProcessor(
        size={"shortest_edge": spec.resize_shortest_edge},
        crop_size={"height": spec.crop_height, "width": spec.crop_width},
        do_center_crop=spec.do_center_crop, resample=spec.resample,
        rescale_factor=spec.rescale_factor, image_mean=list(spec.image_mean),
        image_std=list(spec.image_std))
    return proc(images=image, return_tensors="np", **kwargs).pixel_values


def assert_matches(ours: np.ndarray, ref: np.ndarray) -> None:
    assert ours.dtype == np.float32
    assert ours.shape == ref.shape
    diff = float(np.abs(ours - ref).max())
    assert diff <= TOL, f"max |diff| {diff}"


def noise(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed + 7 * width + height)
    channels = {"RGB": 3, "RGBA": 4, "L": 1, "LA": 2}[mode]
    pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)  # [h, w, c]
    return Image.frombytes(mode, (width, height), pixels.tobytes())


def expand2square(pil_img, background_color):
    """Verbatim from LLaVA (llava/mm_utils.py)."""
    width, height = pil_img.size
    if width == height:
        return pil_img
    elif width > height:
        result = Image.new(pil_img.mode, (width, width), background_color)
        result.paste(pil_img, (0, (width - height) // 2))
        return result
    else:
        result = Image.new(pil_img.mode, (height, height), background_color)
        result.paste(pil_img, ((height - width) // 2, 0))
        return result


# ----------------------------------------------------------------- parity with HF


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_matches_clip_processor(spec, size):
    image = noise(*size)
    ours = pixel_values(load_image(image), spec)
    assert_matches(ours, hf_pixels(image, spec))
    if spec.do_center_crop:
        assert ours.shape == (1, 3, spec.crop_height, spec.crop_width)


@pytest.mark.parametrize("spec", [SPECS["30-bicubic"], SPECS["pad-crop"]])
def test_one_pixel_tall_image(spec):
    image = noise(50, 1)  # HF needs telling that [1, 50, 3] is channels-last
    assert_matches(pixel_values(load_image(image), spec),
                   hf_pixels(image, spec, input_data_format="channels_last"))


@pytest.mark.parametrize("spec", [SPECS["30-bilinear"], SPECS["336-bicubic"]],
                         ids=["30-bilinear", "336-bicubic"])
@pytest.mark.parametrize("mode", ["RGBA", "LA", "L", "P", "CMYK", "I;16", "1"])
def test_modes_match_clip_processor(spec, mode, tmp_path):
    base = noise(45, 23, "RGBA")
    image = {"RGBA": base, "LA": noise(45, 23, "LA"), "L": noise(45, 23, "L"),
             "P": base.convert("RGB").quantize(64), "CMYK": base.convert("CMYK"),
             "I;16": noise(45, 23, "L").convert("I;16"), "1": noise(45, 23, "L").convert("1")}[mode]
    assert image.mode == mode
    ref = hf_pixels(image, spec)
    assert_matches(pixel_values(load_image(image), spec), ref)
    assert_matches(pixel_values(image, spec), ref)       # pixel_values converts too
    if mode in ("RGBA", "LA", "L", "P", "1", "I;16"):   # PNG can store these: via a file
        path = tmp_path / "img.png"
        image.save(path)
        assert_matches(pixel_values(load_image(path), spec),
                       hf_pixels(hf_load_image(str(path)), spec))


@pytest.mark.parametrize("orientation", [6, 8, 3])
@pytest.mark.parametrize("spec", [SPECS["30-bicubic"], SPECS["336-bilinear"]],
                         ids=["30-bicubic", "336-bilinear"])
def test_exif_rotated_jpeg(orientation, spec, tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = orientation
    noise(64, 40).save(path, exif=exif.tobytes(), quality=90)
    ours = load_image(path)
    assert ours.mode == "RGB"
    assert ours.size == ((40, 64) if orientation in (6, 8) else (64, 40))
    reference = hf_load_image(str(path))
    assert np.array_equal(np.asarray(ours), np.asarray(reference))
    assert_matches(pixel_values(ours, spec), hf_pixels(reference, spec))
    assert_matches(pixel_values(load_image(str(path)), spec), hf_pixels(reference, spec))


@pytest.mark.parametrize("spec", [SPECS["30-bicubic"], SPECS["336-bilinear"], SPECS["pad-crop"]],
                         ids=["30-bicubic", "336-bilinear", "pad-crop"])
@pytest.mark.parametrize("size", [(17, 331), (641, 37), (40, 41), (41, 40), (333, 333), (7, 4)])
def test_pad_to_square_matches_llava(spec, size):
    image = noise(*size)
    padded_spec = Preprocessing(**{**spec.__dict__, "pad_to_square": True})
    background = tuple(int(x * 255) for x in spec.image_mean)
    reference = hf_pixels(expand2square(image, background), spec)
    assert_matches(pixel_values(image, padded_spec), reference)
    if size[0] != size[1]:  # padding really changed something
        assert np.abs(pixel_values(image, spec) - reference).max() > 0.1


def test_array_input_equals_pil_input():
    rgb = np.asarray(noise(20, 11))                       # [11, 20, 3]
    assert np.array_equal(np.asarray(load_image(rgb)), rgb)
    rgba = np.asarray(noise(20, 11, "RGBA"))              # [11, 20, 4]
    assert np.array_equal(np.asarray(load_image(rgba)), rgba[..., :3])
    gray = np.asarray(noise(20, 11, "L"))                 # [11, 20]
    assert np.array_equal(np.asarray(load_image(gray)), np.repeat(gray[..., None], 3, -1))
    assert np.array_equal(np.asarray(load_image(gray[..., None])), np.asarray(load_image(gray)))
    strided = rgb[::2, ::-1]                              # non-contiguous view
    assert np.array_equal(np.asarray(load_image(strided)), strided)


def test_load_image_returns_independent_rgb_copy():
    image = noise(8, 6)
    out = load_image(image)
    assert out.mode == "RGB" and out is not image


def test_resized_size_matches_transformers():
    rng = np.random.default_rng(1)
    for _ in range(3000):
        h, w, edge = (int(v) for v in rng.integers(1, 2000, 3))
        dummy = np.empty((h, w, 3), np.uint8)
        assert resized_size(h, w, edge) == get_resize_output_image_size(
            dummy, edge, default_to_square=False, input_data_format="channels_last")


def test_center_crop_matches_transformers():
    rng = np.random.default_rng(2)
    for _ in range(500):
        h, w, ch, cw = (int(v) for v in rng.integers(1, 40, 4))
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)       # [h, w, 3]
        ref = hf_center_crop(pixels, (ch, cw), input_data_format="channels_last")
        assert np.array_equal(center_crop(pixels, ch, cw), ref), (h, w, ch, cw)


# ----------------------------------------------------------------- bad input


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` but carries almost no data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def raises_image_error(source, match: str, **kwargs):
    with pytest.raises(ImageError, match=match) as info:
        load_image(source, **kwargs)
    return info.value


def test_missing_file(tmp_path):
    raises_image_error(tmp_path / "nope.png", "no such file")
    raises_image_error(str(tmp_path / "nope.png"), "no such file")


def test_directory(tmp_path):
    raises_image_error(tmp_path, "not a regular file")


def test_empty_file(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    raises_image_error(tmp_path / "empty.jpg", "not an image")


def test_text_file_named_png(tmp_path):
    (tmp_path / "notes.png").write_text("definitely not a picture\n")
    raises_image_error(tmp_path / "notes.png", "not an image")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file(fmt, tmp_path):
    path = tmp_path / f"cut.{fmt.lower()}"
    noise(200, 150).save(path, format=fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    raises_image_error(path, "truncated or corrupt")
    with Image.open(path) as lazy:                        # a lazily opened PIL image too
        raises_image_error(lazy, "truncated or corrupt")


def test_huge_image_trips_megapixel_bound(tmp_path):
    path = tmp_path / "tall.png"
    height = MAX_PIXELS + 1                               # under PIL's own bomb limit
    assert height < Image.MAX_IMAGE_PIXELS
    path.write_bytes(png_header(1, height))
    raises_image_error(path, f"at most {MAX_PIXELS} pixels")


@pytest.mark.parametrize("factor", [1.5, 3])  # PIL warns at 1x its limit, raises at 2x
def test_pil_decompression_bomb_is_an_image_error(factor, tmp_path):
    before = Image.MAX_IMAGE_PIXELS
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header(1, int(Image.MAX_IMAGE_PIXELS * factor)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        raises_image_error(path, r"too large \(decompression bomb guard\)", max_pixels=10 ** 12)
    assert not caught                                     # no stray warning escapes
    assert Image.MAX_IMAGE_PIXELS == before               # global left alone


def test_max_pixels_parameter(tmp_path):
    path = tmp_path / "small.png"
    noise(10, 10).save(path)
    assert load_image(path, max_pixels=100).size == (10, 10)
    raises_image_error(path, "at most 99 pixels", max_pixels=99)
    raises_image_error(noise(10, 10), "at most 99 pixels", max_pixels=99)
    raises_image_error(np.zeros((10, 10, 3), np.uint8), "at most 99 pixels", max_pixels=99)


@pytest.mark.parametrize("size", [(0, 0), (0, 5), (5, 0)])
def test_zero_size_pil_image(size):
    raises_image_error(Image.new("RGB", size), "non-empty")


@pytest.mark.parametrize("shape", [(0, 0), (0, 5), (5, 0, 3), (0, 5, 4), (5, 0, 1)])
def test_zero_size_array(shape):
    raises_image_error(np.zeros(shape, np.uint8), "non-empty")


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.uint16, np.int8, bool])
def test_wrong_dtype_array(dtype):
    error = raises_image_error(np.zeros((4, 5, 3), dtype), "expected a uint8 array")
    assert str(np.dtype(dtype)) in str(error)


@pytest.mark.parametrize("shape", [(5,), (4, 5, 2), (4, 5, 5), (3, 4, 5), (1, 4, 5, 3), ()])
def test_wrong_shape_array(shape):
    error = raises_image_error(np.zeros(shape, np.uint8), "expected an array of shape")
    assert str(shape) in str(error)


@pytest.mark.parametrize("value", [None, 3, [[0, 0, 0]], {"path": "x.png"}])
def test_unsupported_types(value):
    error = raises_image_error(value, "expected a file path")
    assert type(value).__name__ in str(error)


@pytest.mark.parametrize("value, message", [(b"\x89PNG", "image data"), (b"", "0 bytes"),
                                            (bytearray(b"not an image"), "not an image format")])
def test_bad_image_bytes(value, message):
    raises_image_error(value, message)


def test_unconvertible_mode():
    raises_image_error(Image.new("La", (4, 4)), "to RGB")


def test_pixel_values_rejects_bad_images():
    spec = SPECS["30-bicubic"]
    with pytest.raises(ImageError, match="PIL.Image.Image"):
        pixel_values(np.zeros((30, 30, 3), np.uint8), spec)
    with pytest.raises(ImageError, match="non-empty"):
        pixel_values(Image.new("RGB", (0, 4)), spec)


def test_pixel_values_refuses_absurd_intermediates():
    strip = Image.new("RGB", (10_000, 1))                 # resizes to 3,360,000 x 336
    with pytest.raises(ImageError, match="resizing"):
        pixel_values(strip, SPECS["336-bicubic"])
    padded = Preprocessing(336, 336, 336, pad_to_square=True)
    with pytest.raises(ImageError, match="square"):
        pixel_values(Image.new("RGB", (20_000, 2)), padded)
    small = SPECS["30-bicubic"]                           # strip -> 300,000 x 30
    assert pixel_values(strip, small).shape == (1, 3, 30, 30)
    with pytest.raises(ImageError, match="under 1000000 pixels"):
        pixel_values(strip, small, max_work_pixels=10 ** 6)


@pytest.mark.parametrize("bad", [dict(crop_height=0), dict(resize_shortest_edge=-1),
                                 dict(resample=9), dict(image_std=(0.5, 0.0, 0.5)),
                                 dict(image_mean=(0.5, 0.5))])
def test_bad_spec(bad):
    spec = Preprocessing(**{**SPECS["30-bicubic"].__dict__, **bad})
    with pytest.raises(BundleError):
        pixel_values(noise(8, 8), spec)
