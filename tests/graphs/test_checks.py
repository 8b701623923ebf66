"""The static graph checks: they pass our bundles and catch what TensorRT / fp16 would trip on."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import runtime
from graphs.__main__ import check_bundle
from graphs.precision import fp16_unsafe_nodes
from graphs.tensorrt_support import check_tensorrt
from tests.conftest import random_image


def _model(op: str, dtype=TensorProto.FLOAT, opset: int = 18, domain: str = "") -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", dtype, [2, 3])
    y = helper.make_tensor_value_info("y", dtype, [2, 3])
    node = helper.make_node(op, ["x"], ["y"], domain=domain, **({"axis": -1} if op == "Softmax" else {}))
    imports = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(helper.make_graph([node], "g", [x], [y]), opset_imports=imports)


def test_our_bundles_pass(bundle_dir, size):
    assert check_bundle(bundle_dir(size)) == {"vision": [], "embed": [], "decoder": []}


def test_tensorrt_check_catches_opset_domain_and_unsupported_ops():
    assert check_tensorrt(_model("Relu")).ok
    assert "opset 23" in check_tensorrt(_model("Relu", opset=23)).problems[0]
    assert any("custom domain" in p for p in check_tensorrt(_model("Relu", domain="com.microsoft")).problems)
    # Unique is "N" in every table; NonZero, which the old hand-written list refused, is "Y" in 10.1 and 10.15
    assert any("Unique" in p for p in check_tensorrt(_model("Unique")).problems)
    assert check_tensorrt(_model("NonZero")).ok


def test_fp16_check_flags_a_half_precision_softmax():
    assert fp16_unsafe_nodes(_model("Softmax", TensorProto.FLOAT16)) == ["Softmax "]
    assert fp16_unsafe_nodes(_model("Softmax", TensorProto.FLOAT)) == []


@pytest.fixture(scope="module")
def fp16_bundle(checkpoint_dir, tmp_path_factory):
    from export import export_llava
    out = tmp_path_factory.mktemp("fp16") / "bundle"
    export_llava(str(checkpoint_dir("tiny")), out, dtype="fp16", log=lambda m: None)
    return out


def test_fp16_export_is_parity_checked_and_keeps_softmax_and_rmsnorm_in_fp32(fp16_bundle):
    from export.tolerance import FP16_ATTENTION_TOLERANCE as ATTENTION_FP16_TOLERANCE, FP16_TOLERANCE
    manifest = json.loads((fp16_bundle / "manifest.json").read_text())
    assert manifest["dtype"] == "fp16"
    assert all(v <= FP16_TOLERANCE for v in manifest["parity"].values())
    decoder = onnx.load(str(fp16_bundle / "decoder.onnx"))
    assert decoder.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    # the attention outputs stay float32, and are parity-checked like the logits
    types = {o.name: o.type.tensor_type.elem_type for o in decoder.graph.output}
    assert types["last_row_attention"] == types["image_attention_share"] == TensorProto.FLOAT
    assert manifest["parity"]["decoder.attention"] <= ATTENTION_FP16_TOLERANCE
    assert check_bundle(fp16_bundle) == {"vision": [], "embed": [], "decoder": []}


def test_fp16_runtime_agrees_with_fp32(fp16_bundle, bundle_dir):
    half, full = runtime.load(fp16_bundle), runtime.load(bundle_dir("tiny"))
    for seed in range(3):
        a = full.answer(random_image(seed), "Where is the mug?", steering=None, max_new_tokens=4)
        b = half.answer(random_image(seed), "Where is the mug?", steering=None, max_new_tokens=4)
        assert abs(a.confidence - b.confidence) < 5e-3
        assert a.token_ids[0] == b.token_ids[0]
        assert np.abs(a.first_token_probs - b.first_token_probs).max() < 5e-3


def test_a_bad_manifest_gets_a_clear_error_not_a_traceback(bundle_dir, tmp_path, capsys):
    import shutil

    from graphs.__main__ import main

    folder = tmp_path / "b"
    shutil.copytree(bundle_dir("tiny"), folder)
    data = json.loads((folder / "manifest.json").read_text())
    data["decoder"]["num_layers"] = "2"
    (folder / "manifest.json").write_text(json.dumps(data))
    assert main(["check", str(folder)]) == 2
    assert "decoder.num_layers must be an integer" in capsys.readouterr().err
