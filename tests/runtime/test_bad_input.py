"""Bad input gets a typed error and leaves the model usable."""
from __future__ import annotations

import math

import numpy as np
import pytest

import runtime
from runtime.errors import ImageError, PromptError, RuntimeInputError, SteeringError
from tests.conftest import random_image

QUESTION = "Where is the mug in relation to the plate?"


@pytest.fixture(scope="module")
def vlm(bundle_dir):
    return runtime.load(bundle_dir("tiny"))


@pytest.fixture(scope="module")
def baseline(vlm):
    return vlm.answer(random_image(0), QUESTION, steering=None, max_new_tokens=6)


def _still_usable(vlm, baseline):
    again = vlm.answer(random_image(0), QUESTION, steering=None, max_new_tokens=6)
    assert again.token_ids == baseline.token_ids and again.confidence == baseline.confidence


def _write(tmp_path, name, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _bad_images(tmp_path):
    from PIL import Image
    good = tmp_path / "good.png"
    Image.fromarray(random_image(3)).save(good)
    png = good.read_bytes()
    nan_tiff = tmp_path / "nan.tiff"
    Image.fromarray(np.full((20, 30), np.nan, np.float32)).save(nan_tiff)
    return {
        "missing file": tmp_path / "nope.png",
        "empty file": _write(tmp_path, "empty.png", b""),
        "text file": _write(tmp_path, "text.png", b"hello, not an image\n"),
        "truncated png": _write(tmp_path, "cut.png", png[: len(png) // 2]),
        "zero-size array": np.zeros((0, 10, 3), np.uint8),
        "float array": np.zeros((10, 10, 3), np.float32),
        "wrong channels": np.zeros((10, 10, 5), np.uint8),
        "not an image": {"pixels": 1},
        "a path too long for the file system": "x" * 5000,
        "a path with a NUL byte": "scene\x00.png",
        "a folder": tmp_path,
        "no bytes": b"",
        "bytes of text": b"hello, not an image\n",
        "bytes of a truncated png": png[: len(png) // 2],
        "a float PIL image full of NaN": Image.fromarray(np.full((20, 30), np.nan, np.float32)),
        "a float PIL image full of inf": Image.fromarray(np.full((20, 30), np.inf, np.float32)),
        "a float PIL image with one NaN": Image.fromarray(np.where(np.eye(20, 30), np.nan, 0.5).astype(np.float32)),
        "a float TIFF file full of NaN": nan_tiff,
        "the bytes of a float TIFF full of NaN": nan_tiff.read_bytes(),
    }


def test_bad_images(vlm, baseline, tmp_path):
    for what, image in _bad_images(tmp_path).items():
        with pytest.raises(ImageError):
            vlm.answer(image, QUESTION)
        _still_usable(vlm, baseline)


def test_a_float_image_of_nan_is_refused_not_answered_as_black(vlm, baseline):
    from PIL import Image
    nan = Image.fromarray(np.full((20, 30), np.nan, np.float32))
    with pytest.raises(ImageError, match="float image .* 600 NaN or infinite pixels of 600"):
        vlm.answer(nan, QUESTION, steering=None, max_new_tokens=6)
    with pytest.raises(ImageError, match="NaN or infinite"):
        vlm.answer(random_image(0), QUESTION, measure_image_influence=True, blank_image=nan)
    finite = Image.fromarray(np.full((20, 30), 0.25, np.float32))          # as transformers reads it: kept
    assert vlm.answer(finite, QUESTION, steering=None, max_new_tokens=2).token_ids
    _still_usable(vlm, baseline)


@pytest.mark.parametrize("question", ["", "   ", "left\x00right?", "what\x1b[2J is this?", 42, None])
def test_bad_questions(vlm, baseline, question):
    with pytest.raises(PromptError):
        vlm.answer(random_image(0), question)
    _still_usable(vlm, baseline)


def test_prompt_longer_than_the_context(vlm, baseline):
    long_question = "left " * 600        # > 512 positions of the tiny model once tokenised
    with pytest.raises(PromptError, match="exceeds the context"):
        vlm.answer(random_image(0), long_question)
    with pytest.raises(PromptError, match="exceeds the context"):
        vlm.answer(random_image(0), QUESTION, max_new_tokens=10_000)
    _still_usable(vlm, baseline)


@pytest.mark.parametrize("question, times", [("Is the <image> left of the plate?", "once"),
                                             ("<image> or <image>?", "twice"), ("<image>" * 3, "3 times")])
def test_a_question_holding_the_image_placeholder(vlm, baseline, question, times):
    """Only the question's own placeholders are counted (not the template's), and the message says why."""
    for call in (vlm.answer, lambda *a: next(vlm.stream(*a)), lambda *a: next(vlm.stream_answer(*a))):
        with pytest.raises(PromptError, match=f"the question contains the image placeholder '<image>' {times}; "
                                              "the chat template already holds the one image slot") as e:
            call(random_image(0), question)
        assert "exactly once" not in str(e.value)
    _still_usable(vlm, baseline)


def test_raw_prompt_needs_exactly_one_image_placeholder(vlm, baseline):
    for prompt in ["USER: no image here ASSISTANT:", "USER: <image><image> two ASSISTANT:"]:
        with pytest.raises(PromptError, match="exactly once"):
            vlm.generate(random_image(0), prompt)
    _still_usable(vlm, baseline)


@pytest.mark.parametrize("make", [
    lambda: runtime.ScalingVis(0.0), lambda: runtime.ScalingVis(-1.0), lambda: runtime.ScalingVis(math.nan),
    lambda: runtime.ScalingVis(math.inf), lambda: runtime.ScalingVis("big"), lambda: runtime.ScalingVis(True),
    lambda: runtime.AdaptVis(low=0.0), lambda: runtime.AdaptVis(high=math.inf), lambda: runtime.AdaptVis(threshold=1.5),
    lambda: runtime.AdaptVis(threshold=math.nan), lambda: runtime.AdaptVis(apply_to="everything"),
    lambda: runtime.ScalingVis(np.ones((2, 2, 2))),
])
def test_bad_alphas_are_rejected_at_construction(make):
    with pytest.raises(SteeringError):
        make()


@pytest.mark.parametrize("make", [
    lambda: runtime.ScalingVis(1e38), lambda: runtime.ScalingVis(1e37), lambda: runtime.ScalingVis(100.5),
    lambda: runtime.ScalingVis(0.009), lambda: runtime.ScalingVis(-1.0),
    lambda: runtime.AdaptVis(high=3e38), lambda: runtime.AdaptVis(low=1e-30),
    lambda: runtime.ScalingVis([1.0, 1e38]), lambda: runtime.ScalingVis(np.where(np.eye(2, 4), 1e38, 1.0)),
])
def test_alphas_out_of_range_are_rejected(make):
    with pytest.raises(SteeringError, match=r"must lie in \[0.01, 100\]"):
        make()


def test_alphas_at_the_ends_of_the_range_answer(vlm, baseline):
    from runtime.steering import ALPHA_MAX, ALPHA_MIN
    for alpha in (ALPHA_MIN, ALPHA_MAX, [ALPHA_MIN, ALPHA_MAX]):
        a = np.resize(np.asarray(alpha), vlm.manifest.decoder.num_layers) if isinstance(alpha, list) else alpha
        assert vlm.answer(random_image(0), QUESTION, steering=runtime.ScalingVis(a), max_new_tokens=2).token_ids
    _still_usable(vlm, baseline)


def test_alpha_of_the_wrong_shape(vlm, baseline):
    d = vlm.manifest.decoder
    for bad in [np.ones(d.num_layers + 1), np.ones((d.num_layers, d.num_attention_heads + 1))]:
        with pytest.raises(SteeringError, match="shape"):
            vlm.answer(random_image(0), QUESTION, steering=runtime.ScalingVis(bad))
    with pytest.raises(SteeringError):
        vlm.answer(random_image(0), QUESTION, steering="adaptvis")
    _still_usable(vlm, baseline)


def test_per_layer_and_per_head_alphas_broadcast(vlm):
    d = vlm.manifest.decoder
    scalar = vlm.answer(random_image(0), QUESTION, steering=runtime.ScalingVis(2.0), max_new_tokens=6)
    per_layer = vlm.answer(random_image(0), QUESTION, steering=runtime.ScalingVis(np.full(d.num_layers, 2.0)),
                           max_new_tokens=6)
    per_head = vlm.answer(random_image(0), QUESTION,
                          steering=runtime.ScalingVis(np.full((d.num_layers, d.num_attention_heads), 2.0)),
                          max_new_tokens=6)
    assert scalar.token_ids == per_layer.token_ids == per_head.token_ids
    mixed = np.ones((d.num_layers, d.num_attention_heads))
    mixed[0] = 0.3
    differs = vlm.answer(random_image(0), QUESTION, steering=runtime.ScalingVis(mixed), max_new_tokens=6)
    assert differs.first_token_probs is not None
    assert not np.allclose(differs.first_token_probs, scalar.first_token_probs)


def test_bad_max_new_tokens(vlm, baseline):
    for bad in [0, -1, 2.5, True]:
        with pytest.raises(PromptError):
            vlm.answer(random_image(0), QUESTION, max_new_tokens=bad)
    _still_usable(vlm, baseline)


def test_all_errors_share_one_base_class():
    for cls in (ImageError, PromptError, SteeringError, runtime.errors.BundleError, runtime.errors.ProviderError):
        assert issubclass(cls, RuntimeInputError)
