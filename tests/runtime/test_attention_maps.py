"""answer(..., return_attention=True): the maps against the naive PyTorch reference, their place on
the image, and bundles exported before the decoder had attention outputs."""
from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import onnx
import pytest
from PIL import Image

import runtime
from graphs.contracts import ATTENTION_OUTPUTS
from graphs.manifest import Preprocessing
from runtime.bundle import sha256_file
from runtime.errors import BundleError
from runtime.preprocess import crop_box, pixel_values
from tests.conftest import random_image
from tests.runtime.reference import Reference
from tests.manifest_edit import rewrite_manifest

QUESTION = "Where is the mug in relation to the plate?"
IMAGES = [random_image(0), random_image(1, 64, 37)]
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def pair(bundle_dir, checkpoint_dir):
    made = {}

    def get(size):
        if size not in made:
            made[size] = (runtime.load(bundle_dir(size)), Reference(checkpoint_dir(size)))
        return made[size]
    return get


def _assert_maps_equal_reference(maps, want, ref, inputs):
    """``maps`` (AttentionMaps) against the reference's last row ``want`` [L, n], put on the grid here
    from the checkpoint's own config: CLS first if kept, then the patches row-major."""
    cfg = ref.model.config
    side = cfg.vision_config.image_size // cfg.vision_config.patch_size
    cls = int(cfg.vision_feature_select_strategy == "full")
    on_image = want[:, (inputs.input_ids[0] == ref.image_id).numpy()].numpy()           # [L, cls + side^2]
    assert maps.maps.dtype == np.float32 and maps.maps.shape == (want.shape[0], side, side)
    assert np.abs(maps.maps - on_image[:, cls:].reshape(-1, side, side)).max() <= TOLERANCE
    assert np.abs(maps.image_share - on_image.sum(-1)).max() <= TOLERANCE
    if cls:
        assert np.abs(maps.cls - on_image[:, 0]).max() <= TOLERANCE
    else:
        assert maps.cls is None


@pytest.mark.parametrize("side", ["below", "above"])
@pytest.mark.parametrize("image_index", range(len(IMAGES)))
def test_adaptvis_maps_of_both_passes_equal_the_reference(pair, size, side, image_index):
    vlm, ref = pair(size)
    image = IMAGES[image_index]
    inputs = ref.inputs(image, QUESTION)
    confidence = ref.confidence(inputs)
    threshold = min(1.0, confidence + 0.01) if side == "below" else max(0.0, confidence - 0.01)
    ans = vlm.answer(image, QUESTION, steering=runtime.AdaptVis(0.5, 2.0, threshold), max_new_tokens=2,
                     return_attention=True)
    assert ans.alpha == (0.5 if side == "below" else 2.0)
    assert set(ans.attention) == {"confidence", "rescaled"}
    _assert_maps_equal_reference(ans.attention["confidence"], ref.last_row_attention(inputs, None), ref, inputs)
    _assert_maps_equal_reference(ans.attention["rescaled"], ref.last_row_attention(inputs, ans.alpha), ref, inputs)
    assert not np.allclose(ans.attention["confidence"].maps, ans.attention["rescaled"].maps, atol=1e-4)


def test_scaling_every_token_after_the_image(pair, size):
    vlm, ref = pair(size)
    inputs = ref.inputs(IMAGES[0], QUESTION)
    ans = vlm.answer(IMAGES[0], QUESTION, steering=runtime.ScalingVis(2.0, apply_to="after_image"),
                     max_new_tokens=2, return_attention=True)
    assert set(ans.attention) == {"rescaled"}
    _assert_maps_equal_reference(ans.attention["rescaled"], ref.last_row_attention(inputs, 2.0, "after_image"),
                                 ref, inputs)


def test_which_passes_are_reported(pair):
    vlm, _ = pair("tiny")
    image = IMAGES[0]
    plain = vlm.answer(image, QUESTION, steering=None, max_new_tokens=2, return_attention=True)
    assert set(plain.attention) == {"confidence"}
    scaled = vlm.answer(image, QUESTION, steering=runtime.ScalingVis(1.5), max_new_tokens=2, return_attention=True)
    assert set(scaled.attention) == {"rescaled"}
    measured = vlm.answer(image, QUESTION, steering=runtime.ScalingVis(1.5), max_new_tokens=2,
                          return_attention=True, measure_image_influence=True)
    assert set(measured.attention) == {"confidence", "rescaled"}
    np.testing.assert_array_equal(measured.attention["confidence"].maps, plain.attention["confidence"].maps)
    np.testing.assert_array_equal(measured.attention["rescaled"].maps, scaled.attention["rescaled"].maps)


def test_attention_changes_nothing_else(pair):
    vlm, _ = pair("tiny-mha")
    steering = runtime.AdaptVis(0.5, 2.0, 0.3)
    without = vlm.answer(IMAGES[1], QUESTION, steering=steering, max_new_tokens=6)
    with_maps = vlm.answer(IMAGES[1], QUESTION, steering=steering, max_new_tokens=6, return_attention=True)
    assert without.attention is None
    assert (with_maps.token_ids, with_maps.confidence, with_maps.alpha) == \
           (without.token_ids, without.confidence, without.alpha)
    as_json = json.loads(json.dumps(with_maps.to_dict()))
    assert np.allclose(as_json["attention"]["rescaled"]["maps"], with_maps.attention["rescaled"].maps)
    assert json.loads(json.dumps(without.to_dict()))["attention"] is None


# -- where the maps lie on the image ------------------------------------------------------------

@pytest.fixture(scope="module")
def focused_bundle(checkpoint_dir, tmp_path_factory):
    """The tiny checkpoints with decoder layer 0 made to look where its query looks like a key:
    every head has the same query and key projection (head 0's query rows, times 3), and the
    rotary embedding is made (nearly) the identity: its one pair turning 1 rad per position is
    zeroed in that projection, and rope_theta = 1e30 stalls the others.  An image token whose
    feature is the last prompt token's embedding then gets layer 0's largest logit, q.q."""
    import torch
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from export import export_llava

    made = {}

    def get(size):
        if size not in made:
            src = checkpoint_dir(size)
            model = LlavaForConditionalGeneration.from_pretrained(src, attn_implementation="eager").eval()
            text = model.config.text_config
            attn = model.model.language_model.layers[0].self_attn
            d = attn.head_dim
            with torch.no_grad():
                rows = attn.q_proj.weight[:d].clone()                           # [d, hidden]
                rows[[0, d // 2]] = 0.0
                rows *= 3.0
                attn.q_proj.weight.copy_(rows.repeat(text.num_attention_heads, 1))
                attn.k_proj.weight.copy_(rows.repeat(text.num_key_value_heads, 1))
            text.rope_theta = 1e30
            folder = tmp_path_factory.mktemp(f"focused-{size}")
            model.save_pretrained(folder / "checkpoint", safe_serialization=True)
            AutoProcessor.from_pretrained(src, use_fast=False).save_pretrained(folder / "checkpoint")
            export_llava(str(folder / "checkpoint"), folder / "bundle", log=lambda m: None)
            made[size] = folder / "bundle"
        return made[size]
    return get


def test_attention_forced_onto_one_patch_peaks_on_its_cell(focused_bundle, size):
    """The image token at (row r, column c) of the grid gets the last prompt token's own embedding
    as its feature: layer 0's map peaks at [r, c], in both passes, on both tiny checkpoints
    (tiny-mha: behind a CLS token)."""
    vlm = runtime.load(focused_bundle(size))
    rows, cols = vlm.manifest.image_grid
    cls = int(vlm.manifest.image_cls_token)
    prompt = vlm.prompts.from_question(QUESTION)
    last = vlm.sessions.embeddings(prompt.ids[-1:])[0, 0]                 # [C]
    real = vlm.sessions.image_features
    for r, c in [(0, cols - 1), (rows - 1, 1), (2, 0), (rows // 2, cols // 2)]:
        def crafted(pixels, token=cls + r * cols + c):
            features = real(pixels).copy()                                  # [1, T, C]
            features[0, token] = last
            return features

        vlm.sessions.image_features = crafted
        vlm.clear_cache()
        ans = vlm.answer(IMAGES[0], QUESTION, steering=runtime.AdaptVis(0.5, 2.0, 0.0), max_new_tokens=1,
                         return_attention=True)
        for which, maps in ans.attention.items():
            layer0 = maps.maps[0]                                           # [rows, cols]
            assert np.unravel_index(layer0.argmax(), layer0.shape) == (r, c), (which, r, c)
            others = np.delete(layer0.ravel(), r * cols + c)
            assert layer0[r, c] > 5 * others.max(), (which, r, c, layer0[r, c], others.max())   # not by a hair


_VARIANTS = {
    "resize and crop": dict(),
    "pad to square": dict(pad_to_square=True),
    "crop larger than the resized image": dict(resize_shortest_edge=24),
    "no crop": dict(do_center_crop=False),       # the grid's square only for a square image
}
_SIZES = [(50, 40), (37, 64), (90, 31), (30, 30)]


@pytest.mark.parametrize("variant, width, height", [(v, w, h) for v in _VARIANTS for w, h in _SIZES
                                                    if v != "no crop" or w == h])
def test_the_box_puts_each_cell_on_its_patch_of_the_picture(bundle_dir, variant, width, height):
    """A dot drawn on the original image at the centre of cell (r, c), placed by ``box``, is in patch
    (r, c) of the pixels the model sees."""
    manifest = runtime.load(bundle_dir("tiny")).manifest
    spec = dataclasses.replace(manifest.preprocessing, **_VARIANTS[variant])
    rows, cols = manifest.image_grid
    left, top, right, bottom = crop_box(width, height, spec)
    cell_w, cell_h = (right - left) / cols, (bottom - top) / rows
    blank = np.zeros((height, width, 3), np.uint8)
    background = pixel_values(Image.fromarray(blank), spec)[0]                          # [3, H, W]
    checked = 0
    for r in range(rows):
        for c in range(cols):
            x, y = left + (c + 0.5) * cell_w, top + (r + 0.5) * cell_h
            if not (1 <= x < width - 1 and 1 <= y < height - 1):
                continue                             # the cell's centre is padding, not the picture
            picture = blank.copy()
            rx, ry = max(1.0, 0.15 * cell_w), max(1.0, 0.15 * cell_h)
            picture[int(y - ry): int(np.ceil(y + ry)), int(x - rx): int(np.ceil(x + rx))] = 255
            moved = np.abs(pixel_values(Image.fromarray(picture), spec)[0] - background).sum(0)   # [H, W]
            ph, pw = moved.shape[0] // rows, moved.shape[1] // cols
            patches = moved[: rows * ph, : cols * pw].reshape(rows, ph, cols, pw).sum(axis=(1, 3))
            assert np.unravel_index(patches.argmax(), patches.shape) == (r, c), (variant, width, height, r, c)
            checked += 1
    assert checked >= cols


def test_crop_box_of_a_known_case():
    spec = Preprocessing(resize_shortest_edge=30, crop_height=30, crop_width=30)
    # 50 x 40 -> resized 37 x 30 (long side truncated) -> crop columns [3, 33)
    assert crop_box(50, 40, spec) == pytest.approx((3 * 50 / 37, 0.0, 33 * 50 / 37, 40.0))
    # padded to 50 x 50 (pasted 5 rows down) -> resized 30 x 30, no crop offset
    padded = dataclasses.replace(spec, pad_to_square=True)
    assert crop_box(50, 40, padded) == pytest.approx((0.0, -5.0, 50.0, 45.0))


# -- bundles exported before the attention outputs ----------------------------------------------

def _as_old_bundle(folder, drop_graph_outputs: bool) -> None:
    """What an export made before the attention outputs looks like (the graph's outputs optional)."""
    data = json.loads((folder / "manifest.json").read_text())
    if drop_graph_outputs:
        model = onnx.load(str(folder / "decoder.onnx"))
        for output in [o for o in model.graph.output if o.name in ATTENTION_OUTPUTS]:
            model.graph.output.remove(output)
        onnx.save(model, str(folder / "decoder.onnx"))
        data["sha256"]["decoder.onnx"] = sha256_file(folder / "decoder.onnx")
    data["outputs"]["decoder"] = [n for n in data["outputs"]["decoder"] if n not in ATTENTION_OUTPUTS]
    for key in ("image_grid", "image_cls_token", "io"):        # io came after the attention outputs
        del data[key]
    del data["parity"]["decoder.attention"]
    rewrite_manifest(folder, data)


@pytest.mark.parametrize("drop_graph_outputs", [True, False], ids=["graph and manifest", "manifest only"])
def test_an_old_bundle_answers_and_refuses_attention_clearly(bundle_dir, size, tmp_path, drop_graph_outputs):
    from graphs.__main__ import check_bundle

    old = tmp_path / "old"
    shutil.copytree(bundle_dir(size), old)
    _as_old_bundle(old, drop_graph_outputs)
    vlm = runtime.load(old)
    assert not vlm.manifest.has_attention_outputs and vlm.manifest.image_grid is None
    new = runtime.load(bundle_dir(size))
    steering = runtime.AdaptVis(0.5, 2.0, 0.3)
    a = vlm.answer(IMAGES[0], QUESTION, steering=steering, max_new_tokens=4)
    b = new.answer(IMAGES[0], QUESTION, steering=steering, max_new_tokens=4)
    assert (a.token_ids, a.confidence, a.alpha) == (b.token_ids, b.confidence, b.alpha) and a.attention is None
    with pytest.raises(BundleError, match="exported before the decoder returned its attention.*[Rr]e-export"):
        vlm.answer(IMAGES[0], QUESTION, steering=steering, max_new_tokens=4, return_attention=True)
    again = vlm.answer(IMAGES[0], QUESTION, steering=steering, max_new_tokens=4)     # still usable
    assert again.token_ids == a.token_ids
    if drop_graph_outputs:
        assert check_bundle(old) == {"vision": [], "embed": [], "decoder": []}
