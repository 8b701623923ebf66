"""The Qwen fused decoder pair: its graphs and its parity (decoder.onnx and the PyTorch reference).  Its answers
(tokens equal to the reference through runtime.load(..., decoder="fused")) are checked in test_answer.py."""
from __future__ import annotations

import onnx
import pytest

FAMILIES = ("tiny-qwen2.5-vl", "tiny-qwen3-vl")
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


def test_no_fused_writes_only_the_standard_decoder(checkpoint_dir, tmp_path):
    from export.route import export_model
    from graphs.qwen_manifest import QwenManifest

    out = tmp_path / "bundle"
    export_model(str(checkpoint_dir("tiny-qwen3-vl")), out, fused=False, log=lambda m: None)
    assert QwenManifest.read(out).fused_decoders is None
    assert not list(out.glob("decoder_*fp32*"))
    import runtime
    from runtime.errors import BundleError
    from runtime.qwen_vl.fused_decoder import QwenFusedModel
    with pytest.raises(BundleError, match="no fused fp32 decoder"):
        QwenFusedModel(out)
    with pytest.raises(BundleError, match="no such fused decoder"):
        runtime.load(out, decoder="fused")
    assert runtime.load(out).sessions.decoder_choice.flavour == "standard"      # "auto": the one there is
