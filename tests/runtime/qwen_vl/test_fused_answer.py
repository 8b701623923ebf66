"""The Qwen fused decoder pair: its graphs, its parity (decoder.onnx and the PyTorch reference), its answers."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from PIL import Image

from tests.conftest import random_image

FAMILIES = ("tiny-qwen2.5-vl", "tiny-qwen3-vl")
IMAGES = [(64, 64), (70, 130), (150, 60)]
QUESTION = "Where is the mug in relation to the plate?"


@pytest.fixture(scope="module")
def models(checkpoint_dir, qwen_bundle_dir):
    from export.qwen_reference import QwenReference
    from runtime.qwen_vl.answer import QwenModel
    from runtime.qwen_vl.fused_decoder import QwenFusedModel

    return {size: (QwenFusedModel(qwen_bundle_dir(size)), QwenModel(qwen_bundle_dir(size)),
                   QwenReference(checkpoint_dir(size))) for size in FAMILIES}


def _graphs(folder, record):
    return {k: onnx.load(str(folder / record[k]), load_external_data=False) for k in ("plain", "steered")}


@pytest.mark.parametrize("size", FAMILIES)
def test_mrope_once_per_call_and_rotary_inside_the_plain_attention(size, qwen_bundle_dir):
    from graphs.qwen_manifest import QwenManifest

    folder = qwen_bundle_dir(size)
    m = QwenManifest.read(folder)
    record = m.fused_decoders["fp32"]
    L = m.decoder["num_layers"]
    graphs = _graphs(folder, record)
    for which, g in graphs.items():
        ops = [n.op_type for n in g.graph.node]
        assert ops.count("Cos") == 1 and ops.count("Sin") == 1, which          # cos/sin once per call
        assert "position_ids" in [i.name for i in g.graph.input]
        gqa = [n for n in g.graph.node if n.op_type == "GroupQueryAttention"]
        assert len(gqa) == L
        for node in gqa:                                                       # past and present: one buffer
            assert node.input[3].replace("past_key_values", "present") == node.output[1]
        if which == "plain":
            assert len({(n.input[7], n.input[8]) for n in gqa}) == 1 and gqa[0].input[7]   # the same tables
            assert all(next(a.i for a in n.attribute if a.name == "do_rotary") == 1 for n in gqa)
            assert "RotaryEmbedding" not in ops and all(len(n.input) < 11 or not n.input[10] for n in gqa)
        else:
            rotary = [n for n in g.graph.node if n.op_type == "RotaryEmbedding"]
            assert len(rotary) == 2 * L and len({n.input[2] for n in rotary}) == 1
            assert all(n.input[10] for n in gqa)                               # the steering bias
    assert record["nodes_per_layer"]["plain"] <= 20 and record["nodes_per_layer"]["steered"] <= 40
    if m.deepstack_layers:                                                     # Qwen3-VL: QK-norm and DeepStack
        plain = [n.op_type for n in graphs["plain"].graph.node]
        assert plain.count("SimplifiedLayerNormalization") == 2 * L + 1
        assert "deepstack_embeds" in [i.name for i in graphs["plain"].graph.input]
    standard = onnx.load(str(folder / m.graphs["decoder"]["file"]), load_external_data=False)
    assert len(standard.graph.node) / L > 4 * record["nodes_per_layer"]["steered"]


@pytest.mark.parametrize("size", FAMILIES)
def test_parity_with_decoder_onnx_and_the_reference(size, models, qwen_bundle_dir):
    """Measured again here (not only read from the manifest): within LLaVA's fused rule."""
    from export.qwen_vl import parity
    from export.qwen_vl.bundle import parity_image
    from export.qwen_vl.fused import compare_with_reference, compare_with_standard, limits_from

    fused, standard, ref = models[size]
    record = fused.manifest.fused_decoders["fp32"]
    limits = limits_from(fused.manifest.parity_tolerance)
    assert record["parity_tolerance"] == limits
    vs_standard = compare_with_standard(standard, fused, parity_image(), parity.QUESTION, seed=1)
    vs_reference = compare_with_reference(ref, fused, seed=1)
    print(f"{size}: vs decoder.onnx {vs_standard}, vs reference {vs_reference}")
    for kind in ("logits", "kv", "attention"):
        assert 0 < vs_standard[kind] <= limits["standard"][kind], (kind, vs_standard, limits)
        assert 0 < vs_reference[kind] <= limits["reference"][kind], (kind, vs_reference, limits)
        assert record["parity"]["reference"][kind] <= limits["reference"][kind]


@pytest.mark.parametrize("size", FAMILIES)
def test_fused_tokens_equal_the_reference_in_every_steering_mode(size, models):
    from runtime.steering import AdaptVis, ScalingVis

    fused, _, ref = models[size]
    per_layer_head = np.linspace(0.5, 2.0, ref.layers * ref.heads).reshape(ref.layers, ref.heads).astype(np.float32)
    differs = 0
    for i, (h, w) in enumerate(IMAGES):
        image = Image.fromarray(random_image(i, h, w))
        plain = fused.answer(image, QUESTION)
        want = ref.plain(image, QUESTION)
        assert plain.token_ids == want.token_ids, (size, i, "plain")
        assert abs(plain.confidence - want.confidence) <= 1e-5
        for alpha, rows in ((0.5, "last_token"), (per_layer_head, "last_token"), (4.0, "after_image")):
            got = fused.answer(image, QUESTION, ScalingVis(alpha, apply_to=rows))
            assert got.token_ids == ref.scalingvis(image, QUESTION, alpha, rows=rows).token_ids, (size, i, rows)
            differs += got.token_ids != plain.token_ids
        for threshold in (1.0, 0.0):
            got = fused.answer(image, QUESTION, AdaptVis(low=0.5, high=per_layer_head, threshold=threshold))
            want = ref.adaptvis(image, QUESTION, 0.5, per_layer_head, threshold)
            assert got.token_ids == want.token_ids, (size, i, threshold)
            assert abs(got.confidence - want.confidence) <= 1e-5
            differs += got.token_ids != plain.token_ids
    assert differs >= 3                 # the steered graph's inputs change the answers


def test_no_fused_writes_only_the_standard_decoder(checkpoint_dir, tmp_path):
    from export.route import export_model
    from graphs.qwen_manifest import QwenManifest

    out = tmp_path / "bundle"
    export_model(str(checkpoint_dir("tiny-qwen3-vl")), out, fused=False, log=lambda m: None)
    assert QwenManifest.read(out).fused_decoders is None
    assert not list(out.glob("decoder_*fp32*"))
    from runtime.errors import BundleError
    from runtime.qwen_vl.fused_decoder import QwenFusedModel
    with pytest.raises(BundleError, match="no fused fp32 decoder"):
        QwenFusedModel(out)
