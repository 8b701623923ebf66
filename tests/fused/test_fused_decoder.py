"""The fused pair as graphs and as bundle files: nodes, the shared KV buffers, parity with decoder.onnx, the manifest."""
from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from fused import FuseError, FusedParityError, UnsupportedDecoderError, fuse_bundle
from fused.graph import check_supported
from fused.parity import FIXED, check_parity, compare_decoders, tolerances
from fused.weights import DecoderNumbers
from graphs.contracts import plain_decoder_contract, steered_decoder_contract
from graphs.manifest import Manifest
from runtime.bundle import Bundle
from tests.manifest_edit import rewrite_manifest


def _graph(folder, record, which):
    return onnx.load(str(folder / record[which]), load_external_data=False)


def test_a_plain_graph_of_ten_nodes_a_layer_and_a_steered_one_under_thirty(fused_bundle, size):
    folder = fused_bundle(size)
    manifest = Manifest.read(folder)
    record = manifest.fused_decoders["fp32"]
    L = manifest.decoder.num_layers
    plain, steered = _graph(folder, record, "plain"), _graph(folder, record, "steered")
    assert record["nodes"] == {"plain": len(plain.graph.node), "steered": len(steered.graph.node)}
    assert record["nodes_per_layer"]["plain"] == 10 and record["nodes_per_layer"]["steered"] <= 28
    ops = {n.op_type for n in plain.graph.node}
    assert not ops & {"RotaryEmbedding", "FusedMatMul", "Softmax", "Concat"}       # rotary inside attention
    gqa = [n for n in plain.graph.node if n.op_type == "GroupQueryAttention"]
    assert len(gqa) == L and all(n.input[1] == n.input[2] == "" for n in gqa)     # packed q, k, v
    assert all(next(a.i for a in n.attribute if a.name == "do_rotary") == 1 for n in gqa)
    assert all(len(n.input) < 11 or n.input[10] == "" for n in gqa)               # no bias: the fast kernels
    steered_gqa = [n for n in steered.graph.node if n.op_type == "GroupQueryAttention"]
    assert len(steered_gqa) == L and all(n.input[10] for n in steered_gqa)         # the steering bias
    for node in gqa + steered_gqa:                                                 # past and present: one buffer
        assert node.input[3].replace("past_key_values", "present") == node.output[1]
    standard = onnx.load(str(folder / manifest.graphs["decoder"]), load_external_data=False)
    assert len(standard.graph.node) / L > 5 * record["nodes_per_layer"]["steered"]


def test_one_weights_file_for_both_graphs(fused_bundle):
    folder = fused_bundle("tiny")
    record = Manifest.read(folder).fused_decoders["fp32"]
    places = {}
    for which in ("plain", "steered"):
        for t in _graph(folder, record, which).graph.initializer:
            if t.data_location == onnx.TensorProto.EXTERNAL:
                entry = {e.key: e.value for e in t.external_data}
                assert entry["location"] == record["data"]
                places.setdefault(t.name, set()).add((entry["offset"], entry["length"]))
    assert "l0.qkv" in places and all(len(p) == 1 for p in places.values())      # shared, never written twice
    written = sum(int(length) for (_, length), in (tuple(p) for p in places.values()))
    assert (folder / record["data"]).stat().st_size < 1.05 * written + 4096 * len(places)


def test_the_graphs_keep_their_contracts(fused_bundle, size):
    folder = fused_bundle(size)
    manifest = Manifest.read(folder)
    record = manifest.fused_decoders["fp32"]
    L = manifest.decoder.num_layers
    for which, contract in (("plain", plain_decoder_contract(L)), ("steered", steered_decoder_contract(L))):
        session = ort.InferenceSession(str(folder / record[which]), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == contract.input_names
        assert [o.name for o in session.get_outputs()] == contract.output_names


def test_parity_with_the_standard_decoder_is_recorded_and_rounding_only(fused_bundle, size):
    folder = fused_bundle(size)
    manifest = Bundle.open(folder).manifest  # sha256 of the new files recorded too
    record = manifest.fused_decoders["fp32"]
    limits, rule = tolerances(manifest, "fp32")
    assert record["parity_tolerance"] == limits and record["parity_rule"] == rule
    assert rule.startswith("2 x the export's own limit")
    assert all(record["parity"][k] <= limits[k] / 4 for k in limits)
    again = compare_decoders(folder, manifest, record, "fp32", seed=3)      # other inputs
    check_parity(again, limits, "fp32")


def test_atol_only_widens(fused_bundle):
    manifest = Manifest.read(fused_bundle("tiny"))
    limits, _ = tolerances(manifest, "fp32")
    assert tolerances(manifest, "fp32", atol=1e-12)[0] == limits
    wide, rule = tolerances(manifest, "fp32", atol=0.5)
    assert wide["logits"] == 0.5 and "widened" in rule


def test_fp16_pair_is_fp16_inside_and_within_the_fp16_tolerance(fused_bundle):
    folder = fused_bundle("tiny", ("fp32", "fp16"))
    manifest = Manifest.read(folder)
    record = manifest.fused_decoders["fp16"]
    for which in ("plain", "steered"):
        model = _graph(folder, record, which)
        assert {t.data_type for t in model.graph.initializer if len(t.dims) == 2} == {onnx.TensorProto.FLOAT16}
        fp32 = _graph(folder, manifest.fused_decoders["fp32"], which)
        casts = [sum(n.op_type == "Cast" for n in m.graph.node) for m in (model, fp32)]
        assert casts[0] == casts[1] + (1 if which == "plain" else 3)      # logits (+ steering factor, attention rows)
    assert all(record["parity"][k] <= FIXED["fp16"][k] for k in record["parity"])
    assert set(manifest.fused_decoders) == {"fp32", "fp16"}


def test_a_head_size_grouped_query_attention_refuses_is_refused():
    numbers = DecoderNumbers(2, 4, 4, 12, 48, 96, 512, 512, 1e-5)
    with pytest.raises(UnsupportedDecoderError, match="head size 12"):
        check_supported(numbers)


def test_a_mismatch_fails_and_leaves_the_bundle_as_it_was(fused_bundle, monkeypatch):
    folder = fused_bundle("tiny")
    before = (folder / "manifest.json").read_text()
    files = sorted(p.name for p in folder.iterdir())
    import fused.bundle as fb

    monkeypatch.setattr(fb, "compare_decoders", lambda *a, **k: {"logits": 1.0, "kv": 0.0, "attention": 0.0})
    for dtype in ("fp16", "fp32"):          # a new one, and one over the fused pair already there
        with pytest.raises(FusedParityError, match="logits 1.00e\\+00"):
            fuse_bundle(folder, dtype, log=lambda m: None)
        assert (folder / "manifest.json").read_text() == before
        assert sorted(p.name for p in folder.iterdir()) == files
    Bundle.open(folder)                     # every checksum still holds


def test_a_bundle_that_does_not_verify_is_not_re_signed(fused_bundle, tmp_path):
    folder = tmp_path / "bundle"
    shutil.copytree(fused_bundle("tiny"), folder)
    data = json.loads((folder / "manifest.json").read_text())
    data["eos_token_id"] = 3                # an edit the digest does not cover
    (folder / "manifest.json").write_text(json.dumps(data))
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.name.startswith("manifest")}
    with pytest.raises(FuseError, match="does not verify"):
        fuse_bundle(folder, "fp32", log=lambda m: None)
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.name.startswith("manifest")} == before


def test_another_checkpoint_is_refused(fused_bundle, checkpoint_dir, tmp_path):
    folder = tmp_path / "bundle"
    shutil.copytree(fused_bundle("tiny"), folder)
    with pytest.raises(FuseError, match="not the checkpoint it was exported from"):
        fuse_bundle(folder, "fp32", checkpoint=checkpoint_dir("tiny-mha"), log=lambda m: None)
    with pytest.raises(FuseError, match="has no config.json"):
        fuse_bundle(folder, "fp32", checkpoint=tmp_path, log=lambda m: None)
    with pytest.raises(FuseError, match="dtype must be"):
        fuse_bundle(folder, "int8", log=lambda m: None)
    with pytest.raises(FuseError, match="atol must be"):
        fuse_bundle(folder, "fp32", atol=float("nan"), log=lambda m: None)


def test_graph_check_says_which_flavour_each_target_can_run(fused_bundle, capsys):
    from graphs.__main__ import main

    assert main(["check", str(fused_bundle("tiny"))]) == 0
    out = capsys.readouterr().out
    assert "decoder.onnx: ok, runs on tensorrt, onnxruntime-cuda, onnxruntime-cpu" in out
    assert "decoder_plain_fp32.onnx: ok, runs on onnxruntime-cpu, onnxruntime-cuda" in out
    assert "decoder_steered_fp32.onnx: ok, runs on onnxruntime-cpu, onnxruntime-cuda" in out


@pytest.mark.parametrize("key", ["plain", "steered", "data"])
def test_a_fused_file_outside_the_bundle_is_refused(fused_bundle, tmp_path, key):
    import runtime
    from runtime.errors import BundleError

    folder = tmp_path / "bundle"
    shutil.copytree(fused_bundle("tiny"), folder)
    data = json.loads((folder / "manifest.json").read_text())
    for file in ("../decoder.onnx", "/etc/passwd", ".hidden.onnx", 3):
        data["fused_decoders"]["fp32"][key] = file
        rewrite_manifest(folder, data)
        for verify in (True, False):
            with pytest.raises(BundleError, match="inside the bundle folder"):
                runtime.load(folder, decoder="fused", verify_checksums=verify)


@pytest.mark.parametrize("edit, message", [
    (lambda f: f.update({"bf16": dict(f["fp32"], dtype="bf16")}), "key must be one of fp32, fp16"),
    (lambda f: f["fp32"].update({"speed": "fast"}), "unknown fields 'speed'"),
    (lambda f: f["fp32"].update({"dtype": "fp16"}), "not its key"),
    (lambda f: f.update({"fp32": ["decoder_plain_fp32.onnx"]}), "must be an object"),
])
def test_a_malformed_fused_record_is_a_clear_error(fused_bundle, tmp_path, edit, message):
    import runtime
    from runtime.errors import BundleError

    folder = tmp_path / "bundle"
    shutil.copytree(fused_bundle("tiny"), folder)
    data = json.loads((folder / "manifest.json").read_text())
    edit(data["fused_decoders"])
    rewrite_manifest(folder, data)
    with pytest.raises(BundleError, match=message):
        runtime.load(folder)


def test_an_earlier_one_graph_record_is_left_for_the_standard_decoder(fused_bundle, tmp_path):
    import runtime
    from runtime.errors import BundleError

    folder = tmp_path / "bundle"
    shutil.copytree(fused_bundle("tiny"), folder)
    data = json.loads((folder / "manifest.json").read_text())
    data["fused_decoders"]["fp32"] = {"file": "decoder.onnx", "dtype": "fp32", "nodes_per_layer": 27.0}
    del data["io"]                  # that layout predates the io spec (which names no graph it lacks)
    rewrite_manifest(folder, data)
    assert runtime.load(folder).sessions.decoder_choice.flavour == "standard"
    with pytest.raises(BundleError, match="earlier version.*just fuse"):
        runtime.load(folder, decoder="fused")


def test_the_export_writes_no_pair_for_a_head_size_it_refuses_and_says_so(bundle_dir):
    manifest = Manifest.read(bundle_dir("tiny-mha"))            # head size 12
    assert manifest.fused_decoders is None
    import runtime
    assert runtime.load(bundle_dir("tiny-mha")).sessions.decoder_choice.flavour == "standard"


def _planted(folder, record, which, edit):
    """A copy of the pair's ``which`` graph with ``edit`` applied to its nodes; returns the files to compare."""
    model = _graph(folder, record, which)
    edit(model.graph)
    name = f"planted_{record[which]}"
    onnx.save(model, str(folder / name))
    return {**{k: record[k] for k in ("plain", "steered")}, which: name}


@pytest.mark.parametrize("which, defect", [
    ("steered", "alpha ignored"),           # the steering bias left off the attention op
    ("steered", "alpha on every key"),      # the image mask ignored: text keys steered too
    ("plain", "rotary positions off"),      # no rotary inside GroupQueryAttention
])
def test_planted_defects_in_the_pair_are_refused(fused_bundle, tmp_path, which, defect):
    folder = tmp_path / "bundle"
    shutil.copytree(fused_bundle("tiny"), folder)
    manifest = Manifest.read(folder)
    record = manifest.fused_decoders["fp32"]

    def edit(graph):
        for node in graph.node:
            if defect == "alpha ignored" and node.op_type == "GroupQueryAttention":
                node.input[10] = ""
            if defect == "rotary positions off" and node.op_type == "GroupQueryAttention":
                next(a for a in node.attribute if a.name == "do_rotary").i = 0
        if defect == "alpha on every key":
            cast = next(n for n in graph.node if n.op_type == "Cast" and n.input[0] == "image_token_mask")
            graph.node.remove(cast)
            graph.node.insert(0, onnx.helper.make_node("ConstantOfShape", [_shape_of_mask(graph)], [cast.output[0]],
                                                       value=onnx.helper.make_tensor("one", 1, [1], [1.0])))
    files = _planted(folder, record, which, edit)
    limits, _ = tolerances(manifest, "fp32")
    worst = compare_decoders(folder, manifest, files, "fp32")
    with pytest.raises(FusedParityError):
        check_parity(worst, limits, "fp32")
    margin = max(worst[k] / limits[k] for k in limits)
    print(f"{defect}: {margin:.0f} x the tolerance")
    assert margin > 10          # far outside rounding


def _shape_of_mask(graph) -> str:
    graph.node.insert(0, onnx.helper.make_node("Shape", ["image_token_mask"], ["planted_mask_shape"]))
    return "planted_mask_shape"


def test_the_check_says_what_it_needs_and_refuses_where_it_lacks_it(fused_bundle, monkeypatch):
    import fused.bundle as fb
    from fused import FusedMemoryError

    folder = fused_bundle("tiny")
    manifest = Manifest.read(folder)
    before = (folder / "manifest.json").read_text()
    said = []
    need = fb.check_memory(folder, manifest, "fp32", ["CPUExecutionProvider"], said.append)
    standard = (folder / "decoder.onnx").stat().st_size + (folder / "decoder.onnx_data").stat().st_size
    assert need == 3 * standard + fb._BASE_BYTES and "needs about" in said[0]
    assert fb.check_memory(folder, manifest, "fp16", ["CPUExecutionProvider"]) == 3 * standard + fb._BASE_BYTES
    monkeypatch.setattr(fb, "available_bytes", lambda: 10**8)            # a machine with 0.1 GB free
    with pytest.raises(FusedMemoryError, match="needs about .* GB .* 0.1 GB available; build the pair where"):
        fuse_bundle(folder, "fp32", log=lambda m: None)
    assert (folder / "manifest.json").read_text() == before


def test_an_export_without_room_for_the_pair_check_writes_none_and_says_why(checkpoint_dir, tmp_path, monkeypatch):
    import fused.bundle as fb
    from export import export_llava

    monkeypatch.setattr(fb, "available_bytes", lambda: 10**8)
    said = []
    manifest = export_llava(str(checkpoint_dir("tiny")), tmp_path / "b", log=said.append)
    assert manifest.fused_decoders is None
    assert any(line.startswith("no fused decoder pair") and "needs about" in line for line in said)


def test_a_qwen_bundle_is_refused_with_where_its_pair_comes_from(qwen_bundle_dir):
    bundle = qwen_bundle_dir("tiny-qwen3-vl")
    before = {p.name: p.stat().st_mtime_ns for p in bundle.iterdir()}
    with pytest.raises(FuseError, match="its fused pair is built at export"):
        fuse_bundle(bundle)
    assert {p.name: p.stat().st_mtime_ns for p in bundle.iterdir()} == before
