"""runtime.load on a Qwen bundle: the tokens of the PyTorch AdaptVis reference, on both decoders."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.conftest import random_image

FAMILIES = ("tiny-qwen2.5-vl", "tiny-qwen3-vl")
IMAGES = [(64, 64), (70, 130), (150, 60)]          # three grids and token counts; two not square
QUESTION = "Where is the mug in relation to the plate?"
DECODERS = ("standard", "fused")


@pytest.fixture(scope="module")
def models(checkpoint_dir, qwen_bundle_dir):
    import runtime
    from export.qwen_reference import QwenReference

    return {size: ({d: runtime.load(qwen_bundle_dir(size), decoder=d) for d in DECODERS},
                   QwenReference(checkpoint_dir(size))) for size in FAMILIES}


def _image(i):
    h, w = IMAGES[i]
    return Image.fromarray(random_image(i, h, w))


@pytest.mark.parametrize("size", FAMILIES)
def test_prompt_ids_and_grids_match_the_reference(size, models):
    vlms, ref = models[size]
    vlm = vlms["standard"]
    grids = set()
    for i in range(len(IMAGES)):
        inputs = ref.inputs(_image(i), QUESTION)
        image = vlm.images.prepare(_image(i))
        assert image.grid == tuple(inputs["image_grid_thw"][0].tolist())
        grids.add(image.grid)
        prompt = vlm.prompts.from_question(QUESTION, image)
        assert np.array_equal(prompt.ids, inputs["input_ids"][0].numpy())
        assert prompt.image_end - prompt.image_start == image.tokens
        assert prompt.positions.shape == (3, 1, len(prompt.ids))
    assert len(grids) == len(IMAGES)


@pytest.mark.parametrize("size", FAMILIES)
def test_tokens_equal_the_reference_in_every_steering_mode(size, models):
    from runtime.steering import AdaptVis, ScalingVis

    vlms, ref = models[size]
    assert vlms["fused"].sessions.decoder_choice.flavour == "fused"
    assert vlms["standard"].sessions.decoder_choice.flavour == "standard"
    per_layer_head = np.linspace(0.5, 2.0, ref.layers * ref.heads).reshape(ref.layers, ref.heads).astype(np.float32)
    differs = {"ScalingVis": 0, "AdaptVis": 0}      # steered answers unlike the plain one: the check has teeth
    for i in range(len(IMAGES)):
        image = _image(i)
        want = ref.plain(image, QUESTION)
        plain = {}
        for decoder, vlm in vlms.items():
            plain[decoder] = got = vlm.answer(image, QUESTION, steering=None, max_new_tokens=8)
            assert got.token_ids == want.token_ids, (size, i, decoder, "plain")
            assert abs(got.confidence - want.confidence) <= 1e-5
        for alpha, rows in ((0.5, "last_token"), (per_layer_head, "last_token"), (4.0, "after_image")):
            want = ref.scalingvis(image, QUESTION, alpha, rows=rows)
            for decoder, vlm in vlms.items():
                got = vlm.answer(image, QUESTION, ScalingVis(alpha, apply_to=rows), max_new_tokens=8)
                assert got.token_ids == want.token_ids, (size, i, decoder, alpha, rows)
                assert got.confidence is None
            differs["ScalingVis"] += got.token_ids != plain["fused"].token_ids
        for threshold, branch in ((1.0, "low"), (0.0, "high")):      # every confidence is < 1 and >= 0
            steering = AdaptVis(low=0.5, high=per_layer_head, threshold=threshold)
            want = ref.adaptvis(image, QUESTION, 0.5, per_layer_head, threshold)
            for decoder, vlm in vlms.items():
                got = vlm.answer(image, QUESTION, steering, max_new_tokens=8)
                assert got.token_ids == want.token_ids, (size, i, decoder, branch)
                assert abs(got.confidence - want.confidence) <= 1e-5
                assert (got.alpha == 0.5) == (branch == "low") and got.steering == "adaptvis"
            differs["AdaptVis"] += got.token_ids != plain["fused"].token_ids
    print(f"{size}: steered answers unlike the plain one: {differs} of 9 ScalingVis, 6 AdaptVis")
    # a fixture whose greedy tokens ignore alpha would let a runtime that drops the steering pass
    assert differs["ScalingVis"] >= 3 and differs["AdaptVis"] >= 1, differs
