"""A quantized bundle keeps the fused decoder pair, quantized the same way as its standard decoder."""
from __future__ import annotations

import json

import onnx
import pytest

import runtime
from quantize import quantize_bundle
from tests.conftest import random_image

QUESTION = "Where is the mug in relation to the plate?"


@pytest.mark.parametrize("to", ["int4", "int8"])
def test_the_pair_is_quantized_and_answers_as_the_quantized_standard_decoder(bundle_dir, tmp_path, to):
    out = tmp_path / to
    manifest = quantize_bundle(bundle_dir("tiny"), out, to=to, log=lambda m: None)
    record = manifest.fused_decoders["fp32"]
    assert record["quantization"]["precision"] == to
    for which in ("plain", "steered"):
        model = onnx.load(str(out / record[which]), load_external_data=False)
        ops = [n.op_type for n in model.graph.node]
        assert ops.count("MatMulNBits") == 4 * manifest.decoder.num_layers     # qkv, o, gate_up, down
        assert ops.count("MatMul") == 1                                        # the LM head, as exported
        locations = {e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"}
        assert locations == {record["data"]}
    fused, standard = runtime.load(out), runtime.load(out, decoder="standard")
    assert fused.sessions.decoder_choice.flavour == "fused"
    steering = runtime.AdaptVis(0.5, 2.0, 0.5)
    for i in range(3):
        a = fused.answer(random_image(i), QUESTION, steering=steering, max_new_tokens=8)
        b = standard.answer(random_image(i), QUESTION, steering=steering, max_new_tokens=8)
        assert a.token_ids == b.token_ids and a.alpha == b.alpha
        assert abs(a.confidence - b.confidence) <= 1e-5


def test_fp16_says_it_leaves_the_pair_out(bundle_dir, tmp_path):
    said = []
    manifest = quantize_bundle(bundle_dir("tiny"), tmp_path / "fp16", to="fp16", log=said.append)
    assert manifest.fused_decoders is None
    assert "does not convert the fused pair" in manifest.quantization["graphs"]["fused_fp32"]["not_converted"]
    assert any("left out of the quantized bundle" in line for line in said)
    assert not list((tmp_path / "fp16").glob("decoder_plain*"))
    assert json.loads((tmp_path / "fp16" / "manifest.json").read_text())["fused_decoders"] is None
