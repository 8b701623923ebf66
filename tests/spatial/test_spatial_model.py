"""The assembled spatial model end to end: checkpoint from the pip package and the committed file,
export parity on real weights, the runtime against the PyTorch reference, and 8 held-out scenes."""
from __future__ import annotations

import json

import pytest

import runtime
from calibration.datasets import load_dataset
from calibration.scoring import strict_correct
from calibration.synthetic import generate
from spatial.architecture import PROMPT_TEMPLATE
from tests.runtime.reference import Reference

HELD_OUT_SEED = 7          # < 1000: never trained on


@pytest.fixture(scope="module")
def spatial_checkpoint(tmp_path_factory):
    from spatial.assemble import build_spatial_checkpoint

    return build_spatial_checkpoint(tmp_path_factory.mktemp("spatial") / "checkpoint", log=lambda m: None)


@pytest.fixture(scope="module")
def spatial_bundle(spatial_checkpoint, tmp_path_factory):
    from export import export_llava

    out = tmp_path_factory.mktemp("spatial-bundle") / "bundle"
    export_llava(str(spatial_checkpoint), out, log=lambda m: None)
    return out


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    path = generate(tmp_path_factory.mktemp("scenes"), n=8, seed=HELD_OUT_SEED, size=336)
    return load_dataset(path)


def test_export_parity_on_real_weights(spatial_bundle):
    manifest = json.loads((spatial_bundle / "manifest.json").read_text())
    assert manifest["parity"]["logits"] <= 1e-4
    assert manifest["prompt_template"] == PROMPT_TEMPLATE      # what training fed the model
    assert manifest["decoder"]["num_layers"] == 30 and manifest["image_tokens_per_image"] == 36


def test_runtime_equals_the_pytorch_reference(spatial_bundle, spatial_checkpoint, scenes):
    vlm, ref = runtime.load(spatial_bundle), Reference(spatial_checkpoint)
    for item in scenes.items[:3]:
        from PIL import Image

        image = Image.open(item.image_path)
        ours = vlm.answer(image, item.question, steering=None, max_new_tokens=6)
        theirs = ref.plain(image, item.question, 6)
        assert ours.token_ids == theirs.token_ids
        assert abs(ours.confidence - theirs.confidence) <= 1e-5
        steered = vlm.answer(image, item.question, steering=runtime.AdaptVis(0.5, 1.5, 0.9), max_new_tokens=6)
        ref_steered = ref.adaptvis(image, item.question, 0.5, 1.5, 0.9, 6)
        assert steered.token_ids == ref_steered.token_ids and steered.scale == ref_steered.scale


def test_answers_eight_held_out_scenes(spatial_bundle, scenes):
    vlm = runtime.load(spatial_bundle)
    assert len(scenes.items) == 8 and {i.relation for i in scenes.items} == {"on", "under", "left_of", "right_of"}
    right = []
    for item in scenes.items:
        ans = vlm.answer(item.image_path, item.question, steering=None)
        right.append(strict_correct(ans.text, item.gold, item.options))
    assert sum(right) >= 7, right
