"""The fused decoder as a graph and as a bundle file: its nodes, its parity with decoder.onnx, the manifest."""
from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from fused import FuseError, FusedParityError, fuse_bundle
from fused.parity import TOLERANCES, check_parity, compare_decoders
from graphs.manifest import Manifest
from runtime.bundle import open_bundle


def test_few_nodes_per_layer_all_of_them_contrib_kernels(fused_bundle, size):
    folder = fused_bundle(size)
    manifest = Manifest.read(folder)
    record = manifest.fused_decoders["fp32"]
    model = onnx.load(str(folder / record["file"]), load_external_data=False)
    assert record["nodes"] == len(model.graph.node)
    assert record["nodes_per_layer"] <= 30
    standard = onnx.load(str(folder / manifest.graphs["decoder"]), load_external_data=False)
    assert len(standard.graph.node) / manifest.decoder.num_layers > 5 * record["nodes_per_layer"]
    ops = {n.op_type for n in model.graph.node}
    attention = {"tiny": "GroupQueryAttention", "tiny-mha": "MultiHeadAttention"}[size]  # tiny-mha: head size 12
    assert record["attention_op"] == attention and attention in ops
    assert {"RotaryEmbedding", "SkipSimplifiedLayerNormalization", "QuickGelu"} <= ops
    assert sum(n.op_type == attention for n in model.graph.node) == manifest.decoder.num_layers


def test_same_inputs_and_outputs_as_the_standard_decoder(fused_bundle, size):
    folder = fused_bundle(size)
    manifest = Manifest.read(folder)
    fused = ort.InferenceSession(str(folder / manifest.fused_decoders["fp32"]["file"]), providers=["CPUExecutionProvider"])
    standard = ort.InferenceSession(str(folder / manifest.graphs["decoder"]), providers=["CPUExecutionProvider"])
    assert [i.name for i in fused.get_inputs()] == [i.name for i in standard.get_inputs()]
    assert [o.name for o in fused.get_outputs()] == [o.name for o in standard.get_outputs()]


def test_parity_with_the_standard_decoder_is_recorded_and_rounding_only(fused_bundle, size):
    folder = fused_bundle(size)
    manifest = open_bundle(folder)           # sha256 of the new files recorded too
    record = manifest.fused_decoders["fp32"]
    assert record["parity"]["logits"] < 2e-5 and record["parity"]["kv"] < 2e-6 and record["parity"]["attention"] < 1e-6
    again = compare_decoders(folder, manifest, record["file"], "fp32", seed=3)      # other inputs
    check_parity(again, "fp32")


def test_fp16_decoder_is_fp16_inside_and_within_the_fp16_tolerance(fused_bundle):
    folder = fused_bundle("tiny", ("fp32", "fp16"))
    manifest = Manifest.read(folder)
    record = manifest.fused_decoders["fp16"]
    model = onnx.load(str(folder / record["file"]), load_external_data=False)
    kinds = {t.data_type for t in model.graph.initializer if len(t.dims) == 2}
    assert kinds == {onnx.TensorProto.FLOAT16}
    fp32 = onnx.load(str(folder / manifest.fused_decoders["fp32"]["file"]), load_external_data=False)
    casts = [sum(n.op_type == "Cast" for n in m.graph.node) for m in (model, fp32)]
    assert casts[0] == casts[1] + 3          # the steering factor, the logits, the attention rows: none per layer
    assert all(record["parity"][k] <= TOLERANCES["fp16"][k] for k in record["parity"])
    assert set(manifest.fused_decoders) == {"fp32", "fp16"}


def test_past_the_rotary_table_the_graph_refuses(fused_bundle):
    folder = fused_bundle("tiny")
    manifest = Manifest.read(folder)
    d = manifest.decoder
    session = ort.InferenceSession(str(folder / manifest.fused_decoders["fp32"]["file"]),
                                   providers=["CPUExecutionProvider"])

    def feed(position):
        f = {"inputs_embeds": np.zeros((1, 1, d.hidden_size), np.float32), "attention_mask": np.ones((1, 1), np.int64),
             "position_ids": np.array([[position]], np.int64),
             "image_attention_scale": np.ones((1, d.num_layers, d.num_attention_heads), np.float32),
             "image_token_mask": np.zeros((1, 1), bool)}
        f.update({n: np.zeros((1, d.num_key_value_heads, 0, d.head_dim), np.float32) for n in manifest.past_names()})
        return f
    session.run(["logits"], feed(d.max_position_embeddings - 1))
    with pytest.raises(Exception, match="out of range"):
        session.run(["logits"], feed(d.max_position_embeddings))


def test_a_mismatch_fails_and_leaves_the_bundle_as_it_was(fused_bundle, monkeypatch):
    folder = fused_bundle("tiny")
    before = (folder / "manifest.json").read_text()
    files = sorted(p.name for p in folder.iterdir())
    import fused.bundle as fb

    monkeypatch.setattr(fb, "compare_decoders", lambda *a, **k: {"logits": 1.0, "kv": 0.0, "attention": 0.0})
    for dtype in ("fp16", "fp32"):          # a new one, and one over the fused decoder already there
        with pytest.raises(FusedParityError, match="logits 1.00e\\+00"):
            fuse_bundle(folder, dtype, log=lambda m: None)
        assert (folder / "manifest.json").read_text() == before
        assert sorted(p.name for p in folder.iterdir()) == files
    open_bundle(folder)                     # every checksum still holds


def test_another_checkpoint_is_refused(fused_bundle, checkpoint_dir, tmp_path):
    folder = tmp_path / "bundle"
    shutil.copytree(fused_bundle("tiny"), folder)
    with pytest.raises(FuseError, match="not the checkpoint it was exported from"):
        fuse_bundle(folder, "fp32", checkpoint=checkpoint_dir("tiny-mha"), log=lambda m: None)
    with pytest.raises(FuseError, match="has no config.json"):
        fuse_bundle(folder, "fp32", checkpoint=tmp_path, log=lambda m: None)
    with pytest.raises(FuseError, match="dtype must be"):
        fuse_bundle(folder, "int8", log=lambda m: None)


def test_a_quantized_copy_leaves_the_fused_decoders_behind(fused_bundle, tmp_path):
    from quantize import quantize_bundle

    out = tmp_path / "int8"
    quantize_bundle(fused_bundle("tiny"), out, to="int8", log=lambda m: None)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["fused_decoders"] is None
    assert not list(out.glob("decoder_fused*"))


def test_graph_check_says_which_flavour_each_target_can_run(fused_bundle, capsys):
    from graphs.__main__ import main

    assert main(["check", str(fused_bundle("tiny"))]) == 0
    out = capsys.readouterr().out
    assert "standard   decoder.onnx: ok, runs on tensorrt, onnxruntime-cuda, onnxruntime-cpu" in out
    assert "fused fp32 decoder_fused_fp32.onnx: ok, runs on onnxruntime-cpu, onnxruntime-cuda" in out


def test_a_fused_file_outside_the_bundle_is_refused(fused_bundle, tmp_path):
    import json
    import shutil

    import runtime
    from runtime.errors import BundleError
    from tests.manifest_edit import rewrite_manifest

    folder = tmp_path / "bundle"
    shutil.copytree(fused_bundle("tiny"), folder)
    data = json.loads((folder / "manifest.json").read_text())
    for file in ("../decoder.onnx", "/etc/passwd", ".hidden.onnx", 3):
        data["fused_decoders"]["fp32"]["file"] = file
        rewrite_manifest(folder, data)
        for verify in (True, False):
            with pytest.raises(BundleError, match="inside the bundle folder"):
                runtime.load(folder, decoder="fused", verify_checksums=verify)
