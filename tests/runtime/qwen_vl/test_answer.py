"""runtime.qwen_vl.answer: an exported Qwen bundle answers with the tokens of the PyTorch AdaptVis reference."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.conftest import random_image

FAMILIES = ("tiny-qwen2.5-vl", "tiny-qwen3-vl")
IMAGES = [(64, 64), (70, 130), (150, 60)]          # three grids and token counts; two not square
QUESTION = "Where is the mug in relation to the plate?"


@pytest.fixture(scope="module")
def pairs(checkpoint_dir, qwen_bundle_dir):
    from export.qwen_reference import QwenReference
    from runtime.qwen_vl.answer import QwenModel

    return {size: (QwenModel(qwen_bundle_dir(size)), QwenReference(checkpoint_dir(size))) for size in FAMILIES}


def _image(i):
    h, w = IMAGES[i]
    return Image.fromarray(random_image(i, h, w))


@pytest.mark.parametrize("size", FAMILIES)
def test_prompt_ids_and_grids_match_the_reference(size, pairs):
    model, ref = pairs[size]
    grids = set()
    for i in range(len(IMAGES)):
        inputs = ref.inputs(_image(i), QUESTION)
        grid = tuple(inputs["image_grid_thw"][0].tolist())
        grids.add(grid)
        assert np.array_equal(model.prompt_ids(QUESTION, grid), inputs["input_ids"][0].numpy())
    assert len(grids) == len(IMAGES)


@pytest.mark.parametrize("size", FAMILIES)
def test_tokens_equal_the_reference_in_every_steering_mode(size, pairs):
    from runtime.steering import AdaptVis, ScalingVis

    model, ref = pairs[size]
    per_layer_head = np.linspace(0.5, 2.0, ref.layers * ref.heads).reshape(ref.layers, ref.heads).astype(np.float32)
    differs = {"ScalingVis": 0, "AdaptVis": 0}      # steered answers unlike the plain one: the check has teeth
    for i in range(len(IMAGES)):
        image = _image(i)
        plain = model.answer(image, QUESTION)
        want = ref.plain(image, QUESTION)
        assert plain.token_ids == want.token_ids, (size, i, "plain")
        assert abs(plain.confidence - want.confidence) <= 1e-5
        for alpha, rows in ((0.5, "last_token"), (per_layer_head, "last_token"), (4.0, "after_image")):
            got = model.answer(image, QUESTION, ScalingVis(alpha, apply_to=rows))
            assert got.token_ids == ref.scalingvis(image, QUESTION, alpha, rows=rows).token_ids, (size, i, alpha, rows)
            differs["ScalingVis"] += got.token_ids != plain.token_ids
        for threshold, branch in ((1.0, "low"), (0.0, "high")):      # every confidence is < 1 and >= 0
            steering = AdaptVis(low=0.5, high=per_layer_head, threshold=threshold)
            got = model.answer(image, QUESTION, steering)
            want = ref.adaptvis(image, QUESTION, 0.5, per_layer_head, threshold)
            assert got.token_ids == want.token_ids, (size, i, branch)
            assert abs(got.confidence - want.confidence) <= 1e-5
            assert (got.alpha is steering.low) == (branch == "low")
            differs["AdaptVis"] += got.token_ids != plain.token_ids
    print(f"{size}: steered answers unlike the plain one: {differs} of 9 ScalingVis, 6 AdaptVis")
    # a fixture whose greedy tokens ignore alpha would let a runtime that drops the steering pass
    assert differs["ScalingVis"] >= 3 and differs["AdaptVis"] >= 1, differs


def test_runtime_load_names_the_qwen_answer_path_for_a_qwen_bundle(qwen_bundle_dir):
    """Until runtime.load opens Qwen bundles, it refuses one with a typed error that says what answers it."""
    import runtime
    from runtime.families import UnsupportedFamilyError

    folder = qwen_bundle_dir("tiny-qwen2.5-vl")
    with pytest.raises(UnsupportedFamilyError, match="qwen2_5_vl bundle.*QwenModel"):
        runtime.load(folder)
