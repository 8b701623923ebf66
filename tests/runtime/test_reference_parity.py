"""runtime.answer() against the naive two-pass PyTorch reference: same tokens, same confidence, same alpha."""
from __future__ import annotations

import pytest

import runtime
from tests.conftest import random_image
from tests.runtime.reference import Reference

QUESTION = "Where is the mug in relation to the plate?"
NEW_TOKENS = 8
IMAGES = [random_image(0), random_image(1, 64, 37), random_image(2, 31, 90)]


@pytest.fixture(scope="module")
def pair(bundle_dir, checkpoint_dir):
    made = {}

    def get(size):
        if size not in made:
            made[size] = (runtime.load(bundle_dir(size)), Reference(checkpoint_dir(size)))
        return made[size]
    return get


def _same(ours, ref):
    assert ours.token_ids == ref.token_ids
    if ref.confidence is None:
        assert ours.confidence is None
    else:
        assert abs(ours.confidence - ref.confidence) <= 1e-5
    assert ours.alpha == ref.alpha


@pytest.mark.parametrize("image_index", range(len(IMAGES)))
def test_plain(pair, size, image_index):
    vlm, ref = pair(size)
    image = IMAGES[image_index]
    _same(vlm.answer(image, QUESTION, steering=None, max_new_tokens=NEW_TOKENS),
          ref.plain(image, QUESTION, NEW_TOKENS))


@pytest.mark.parametrize("alpha", [0.5, 2.0])
@pytest.mark.parametrize("image_index", range(len(IMAGES)))
def test_scalingvis(pair, size, alpha, image_index):
    vlm, ref = pair(size)
    image = IMAGES[image_index]
    _same(vlm.answer(image, QUESTION, steering=runtime.ScalingVis(alpha), max_new_tokens=NEW_TOKENS),
          ref.scalingvis(image, QUESTION, alpha, NEW_TOKENS))


@pytest.mark.parametrize("side", ["below", "above"])
@pytest.mark.parametrize("image_index", range(len(IMAGES)))
def test_adaptvis_threshold_on_both_sides_of_the_confidence(pair, size, side, image_index):
    vlm, ref = pair(size)
    image = IMAGES[image_index]
    confidence = ref.plain(image, QUESTION, 1).confidence
    # threshold above the confidence -> alpha_low; below -> alpha_high
    threshold = min(1.0, confidence + 0.01) if side == "below" else max(0.0, confidence - 0.01)
    ours = vlm.answer(image, QUESTION, steering=runtime.AdaptVis(0.5, 2.0, threshold), max_new_tokens=NEW_TOKENS)
    want = ref.adaptvis(image, QUESTION, 0.5, 2.0, threshold, NEW_TOKENS)
    _same(ours, want)
    assert ours.alpha == (0.5 if side == "below" else 2.0)


def test_scaling_every_token_after_the_image(pair, size):
    vlm, ref = pair(size)
    image = IMAGES[0]
    ours = vlm.answer(image, QUESTION, steering=runtime.ScalingVis(2.0, apply_to="after_image"),
                      max_new_tokens=NEW_TOKENS)
    _same(ours, ref.scalingvis(image, QUESTION, 2.0, NEW_TOKENS, rows="after_image"))


def test_alpha_visibly_changes_answers(pair, size):
    """The fixtures are sharp enough that steering matters (otherwise the tests above prove little)."""
    vlm, _ = pair(size)
    changed = [vlm.answer(img, QUESTION, steering=runtime.ScalingVis(0.5), max_new_tokens=NEW_TOKENS).token_ids
               != vlm.answer(img, QUESTION, steering=runtime.ScalingVis(2.0), max_new_tokens=NEW_TOKENS).token_ids
               for img in IMAGES]
    assert any(changed)


def test_generate_with_a_raw_prompt_matches_the_template(pair, size):
    vlm, _ = pair(size)
    raw = vlm.manifest.prompt_template.format(question=QUESTION)
    a = vlm.generate(IMAGES[0], raw, steering=None, max_new_tokens=NEW_TOKENS)
    b = vlm.answer(IMAGES[0], QUESTION, steering=None, max_new_tokens=NEW_TOKENS)
    assert a.token_ids == b.token_ids


def test_stream_yields_the_answer_text(pair, size):
    vlm, _ = pair(size)
    pieces = list(vlm.stream(IMAGES[1], QUESTION, steering=None, max_new_tokens=NEW_TOKENS))
    whole = vlm.answer(IMAGES[1], QUESTION, steering=None, max_new_tokens=NEW_TOKENS)
    assert len(pieces) > 1 and "".join(pieces) == whole.text


def test_questions_about_one_image_reuse_its_features_and_prefix(pair, size):
    vlm, _ = pair(size)
    vlm.clear_cache()
    first = vlm.answer(IMAGES[2], QUESTION, steering=None, max_new_tokens=NEW_TOKENS)
    second = vlm.answer(IMAGES[2], "What is left of the cup?", steering=runtime.AdaptVis(0.5, 2.0, 0.3),
                        max_new_tokens=NEW_TOKENS)
    assert first.timings.vision > 0 and second.timings.vision == 0.0
    vlm.clear_cache()
    cold = vlm.answer(IMAGES[2], "What is left of the cup?", steering=runtime.AdaptVis(0.5, 2.0, 0.3),
                      max_new_tokens=NEW_TOKENS)
    assert cold.timings.vision > 0
    assert cold.token_ids == second.token_ids and abs(cold.confidence - second.confidence) <= 1e-6


def test_stream_answer_ends_with_the_answer(pair, size):
    vlm, _ = pair(size)
    steering = runtime.AdaptVis(0.5, 2.0, 0.3)
    items = list(vlm.stream_answer(IMAGES[2], QUESTION, steering=steering, max_new_tokens=NEW_TOKENS,
                                   measure_image_influence=True))
    whole = vlm.answer(IMAGES[2], QUESTION, steering=steering, max_new_tokens=NEW_TOKENS,
                       measure_image_influence=True)
    *pieces, last = items
    assert all(isinstance(p, str) for p in pieces) and isinstance(last, runtime.Answer)
    assert "".join(pieces) == whole.text == last.text
    assert last.token_ids == whole.token_ids and last.alpha == whole.alpha
    assert last.confidence == whole.confidence and last.image_influence == whole.image_influence


def test_image_file_bytes_answer_as_the_file_does(pair, size, tmp_path):
    from PIL import Image
    vlm, _ = pair(size)
    path = tmp_path / "scene.jpg"
    Image.fromarray(IMAGES[1]).save(path, quality=90)
    from_file = vlm.answer(path, QUESTION, steering=None, max_new_tokens=NEW_TOKENS)
    from_bytes = vlm.answer(path.read_bytes(), QUESTION, steering=None, max_new_tokens=NEW_TOKENS)
    assert from_bytes.token_ids == from_file.token_ids and from_bytes.confidence == from_file.confidence
