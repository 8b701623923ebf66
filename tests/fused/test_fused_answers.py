"""runtime.answer() on the fused decoder against the naive PyTorch reference and the standard decoder.

Same tokens, confidence within 1e-5, same alpha: plain, ScalingVis, AdaptVis on both sides of its
threshold, every token after the image, per-layer-per-head alphas, attention maps, the cached image
prefix, a context filled to its end.
"""
from __future__ import annotations

import numpy as np
import pytest

import runtime
from runtime.errors import BundleError, PromptError, ProviderError
from runtime.decoders import choose_decoder
from tests.conftest import random_image
from tests.runtime.reference import Reference

QUESTION = "Where is the mug in relation to the plate?"
NEW_TOKENS = 8
IMAGES = [random_image(0), random_image(1, 64, 37), random_image(2, 31, 90)]


@pytest.fixture(scope="module")
def trio(fused_bundle, checkpoint_dir):
    """(fused runtime, standard runtime, reference) per size."""
    made = {}

    def get(size):
        if size not in made:
            folder = fused_bundle(size)
            made[size] = (runtime.load(folder), runtime.load(folder, decoder="standard"), Reference(checkpoint_dir(size)))
        return made[size]
    return get


def _same(ours, want):
    assert ours.token_ids == want.token_ids
    if want.confidence is None:
        assert ours.confidence is None
    else:
        assert abs(ours.confidence - want.confidence) <= 1e-5
    assert ours.alpha == want.alpha


def test_auto_opens_the_fused_decoder_on_cpu(trio, size):
    fused, standard, _ = trio(size)
    assert fused.sessions.decoder_choice.flavour == "fused"
    assert standard.sessions.decoder_choice.flavour == "standard"


@pytest.mark.parametrize("image_index", range(len(IMAGES)))
def test_plain(trio, size, image_index):
    fused, standard, ref = trio(size)
    image = IMAGES[image_index]
    ours = fused.answer(image, QUESTION, steering=None, max_new_tokens=NEW_TOKENS)
    _same(ours, ref.plain(image, QUESTION, NEW_TOKENS))
    theirs = standard.answer(image, QUESTION, steering=None, max_new_tokens=NEW_TOKENS)
    assert np.abs(ours.first_token_probs - theirs.first_token_probs).max() <= 1e-5


@pytest.mark.parametrize("alpha", [0.5, 2.0])
def test_scalingvis(trio, size, alpha):
    fused, _, ref = trio(size)
    for image in IMAGES:
        _same(fused.answer(image, QUESTION, steering=runtime.ScalingVis(alpha), max_new_tokens=NEW_TOKENS),
              ref.scalingvis(image, QUESTION, alpha, NEW_TOKENS))


@pytest.mark.parametrize("side", ["below", "above"])
def test_adaptvis_threshold_on_both_sides_of_the_confidence(trio, size, side):
    fused, _, ref = trio(size)
    for image in IMAGES:
        confidence = ref.plain(image, QUESTION, 1).confidence
        threshold = min(1.0, confidence + 0.01) if side == "below" else max(0.0, confidence - 0.01)
        ours = fused.answer(image, QUESTION, steering=runtime.AdaptVis(0.5, 2.0, threshold), max_new_tokens=NEW_TOKENS)
        _same(ours, ref.adaptvis(image, QUESTION, 0.5, 2.0, threshold, NEW_TOKENS))
        assert ours.alpha == (0.5 if side == "below" else 2.0)


def test_scaling_every_token_after_the_image(trio, size):
    fused, _, ref = trio(size)
    ours = fused.answer(IMAGES[0], QUESTION, steering=runtime.ScalingVis(2.0, apply_to="after_image"),
                        max_new_tokens=NEW_TOKENS)
    _same(ours, ref.scalingvis(IMAGES[0], QUESTION, 2.0, NEW_TOKENS, rows="after_image"))


def test_per_layer_and_per_head_alphas_equal_the_standard_decoder(trio, size):
    fused, standard, _ = trio(size)
    d = fused.manifest.decoder
    rng = np.random.default_rng(0)
    for alpha in (rng.uniform(0.3, 3.0, d.num_layers), rng.uniform(0.3, 3.0, (d.num_layers, d.num_attention_heads))):
        for apply_to in ("last_token", "after_image"):
            steering = runtime.AdaptVis(alpha, alpha[::-1].copy(), 0.2, apply_to=apply_to)
            a = fused.answer(IMAGES[1], QUESTION, steering=steering, max_new_tokens=NEW_TOKENS)
            b = standard.answer(IMAGES[1], QUESTION, steering=steering, max_new_tokens=NEW_TOKENS)
            assert a.token_ids == b.token_ids and abs(a.confidence - b.confidence) <= 1e-5
            assert np.abs(a.first_token_probs - b.first_token_probs).max() <= 1e-5


def test_steering_moves_the_fused_answers(trio, size):
    fused, _, _ = trio(size)
    moved = [np.abs(fused.answer(img, QUESTION, steering=runtime.ScalingVis(0.5), max_new_tokens=1).first_token_probs
                    - fused.answer(img, QUESTION, steering=runtime.ScalingVis(2.0), max_new_tokens=1).first_token_probs
                    ).max() for img in IMAGES]
    assert max(moved) > 1e-2


def test_attention_maps_equal_the_standard_decoders_and_the_reference(trio, size):
    fused, standard, ref = trio(size)
    steering = runtime.AdaptVis(0.5, 2.0, 0.0)                          # the high branch: both passes reported
    a = fused.answer(IMAGES[0], QUESTION, steering=steering, max_new_tokens=2, return_attention=True)
    b = standard.answer(IMAGES[0], QUESTION, steering=steering, max_new_tokens=2, return_attention=True)
    assert set(a.attention) == set(b.attention) == {"confidence", "rescaled"}
    for which in a.attention:
        assert np.abs(a.attention[which].maps - b.attention[which].maps).max() <= 1e-5
        assert np.abs(a.attention[which].image_share - b.attention[which].image_share).max() <= 1e-5
    inputs = ref.inputs(IMAGES[0], QUESTION)
    rows = ref.last_row_attention(inputs, 2.0).numpy()                     # [L, n] float64
    start = int((inputs.input_ids[0] == ref.image_id).nonzero().min())
    cls = 1 if fused.manifest.image_cls_token else 0
    n_image = fused.manifest.image_tokens_per_image
    want = rows[:, start + cls: start + n_image].reshape(a.attention["rescaled"].maps.shape)
    assert np.abs(a.attention["rescaled"].maps - want).max() <= 1e-5


def test_questions_about_one_image_reuse_its_prefix(trio, size):
    fused, _, _ = trio(size)
    fused.clear_cache()
    first = fused.answer(IMAGES[2], QUESTION, steering=None, max_new_tokens=NEW_TOKENS)
    second = fused.answer(IMAGES[2], "What is left of the cup?", steering=runtime.AdaptVis(0.5, 2.0, 0.3),
                          max_new_tokens=NEW_TOKENS)
    assert first.timings.vision > 0 and second.timings.vision == 0.0
    fused.clear_cache()
    cold = fused.answer(IMAGES[2], "What is left of the cup?", steering=runtime.AdaptVis(0.5, 2.0, 0.3),
                        max_new_tokens=NEW_TOKENS)
    assert cold.token_ids == second.token_ids and abs(cold.confidence - second.confidence) <= 1e-6


def test_a_context_filled_to_its_end_and_one_token_past_it(trio):
    fused, standard, _ = trio("tiny")
    n = fused.answer(IMAGES[0], QUESTION, steering=None, max_new_tokens=1).prompt_tokens
    room = fused.manifest.decoder.max_position_embeddings - n
    with pytest.raises(PromptError, match="exceeds the context"):
        fused.answer(IMAGES[0], QUESTION, steering=None, max_new_tokens=room + 1)
    # the last position the model has: every step until there runs, equal to the standard decoder's
    prompt = fused.manifest.prompt_template.format(question=QUESTION)
    a = fused.generate(IMAGES[0], prompt, steering=runtime.ScalingVis(2.0), max_new_tokens=room)
    b = standard.generate(IMAGES[0], prompt, steering=runtime.ScalingVis(2.0), max_new_tokens=room)
    assert a.token_ids == b.token_ids


def test_which_decoder_is_chosen(fused_bundle):
    from graphs.manifest import Manifest

    manifest = Manifest.read(fused_bundle("tiny"))
    cpu, trt = ["CPUExecutionProvider"], ["TensorrtExecutionProvider", "CUDAExecutionProvider"]
    chosen = choose_decoder(manifest, cpu)
    assert (chosen.file, chosen.steered_file) == ("decoder_plain_fp32.onnx", "decoder_steered_fp32.onnx")
    # no fp32 GroupQueryAttention kernel on CUDA: auto keeps the standard decoder there; asked for, it runs
    assert choose_decoder(manifest, ["CUDAExecutionProvider"]).flavour == "standard"
    assert choose_decoder(manifest, ["CUDAExecutionProvider"], "fused").file == "decoder_plain_fp32.onnx"
    assert choose_decoder(manifest, trt).file == manifest.graphs["decoder"]          # TensorRT: standard ops only
    assert choose_decoder(manifest, cpu, "standard").flavour == "standard"
    with pytest.raises(ProviderError, match="TensorRT's parser"):
        choose_decoder(manifest, trt, "fused")
    with pytest.raises(BundleError, match="no such fused decoder.*fused-fp32"):
        choose_decoder(manifest, cpu, "fused-fp16")
    with pytest.raises(BundleError, match="decoder must be one of"):
        choose_decoder(manifest, cpu, "fast")
    plain = Manifest.read(fused_bundle("tiny")).__class__(**{**vars(manifest), "fused_decoders": None})
    assert choose_decoder(plain, cpu).flavour == "standard"
    with pytest.raises(BundleError, match="just fuse"):
        choose_decoder(plain, cpu, "fused")


def test_an_fp16_fused_decoder_answers_in_an_fp32_bundle(fused_bundle):
    folder = fused_bundle("tiny", ("fp32", "fp16"))
    half, full = runtime.load(folder, decoder="fused-fp16"), runtime.load(folder, decoder="fused-fp32")
    assert half.sessions.decoder_float == np.float16
    for image in IMAGES:
        a = half.answer(image, QUESTION, steering=runtime.AdaptVis(0.5, 2.0, 0.2), max_new_tokens=NEW_TOKENS,
                        return_attention=True)
        b = full.answer(image, QUESTION, steering=runtime.AdaptVis(0.5, 2.0, 0.2), max_new_tokens=NEW_TOKENS,
                        return_attention=True)
        assert abs(a.confidence - b.confidence) <= 2e-3
        assert np.abs(a.first_token_probs - b.first_token_probs).max() <= 2e-3
        assert np.abs(a.attention["confidence"].maps - b.attention["confidence"].maps).max() <= 2e-3
