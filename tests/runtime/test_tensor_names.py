"""The runtime binds each graph's tensors by role, from the manifest's io spec, and refuses a spec the graph belies."""
from __future__ import annotations

import dataclasses
import json
import shutil

import onnx
import pytest

import runtime
from runtime.bundle import Bundle
from runtime.bundle_write import update_bundle
from runtime.errors import BundleError, IOSpecError
from tests.conftest import random_image
from tests.manifest_edit import rewrite_manifest

QUESTION = "Where is the ball in relation to the box?"
STEERING = runtime.AdaptVis(0.5, 2.0, 0.3)
# role -> new name, in every graph that has the role; the K/V template moves with its tensors
RENAMES = {"input_ids": "token_ids", "image_attention_scale": "alpha", "logits": "next_token_logits",
           **{f"past_key.{i}": f"cache_in.{i}.k" for i in range(2)}}


@pytest.fixture
def copy(bundle_dir, tmp_path):
    return shutil.copytree(bundle_dir("tiny"), tmp_path / "bundle")


def _rename_in_graph(model: onnx.ModelProto, old: str, new: str) -> None:
    g = model.graph
    for value in (*g.input, *g.output):
        if value.name == old:
            value.name = new
    for node in g.node:
        for names in (node.input, node.output):
            for i, name in enumerate(names):
                if name == old:
                    names[i] = new


def _renamed_bundle(folder, scratch) -> Bundle:
    """Every graph of ``folder`` with the tensors of RENAMES renamed, and its manifest to match, re-signed."""
    bundle = Bundle.open(folder)
    m = bundle.manifest
    scratch.mkdir()
    files, io = {}, dict(m.io)
    for file, spec in m.io.items():
        model = onnx.load(str(folder / file), load_external_data=False)
        renamed = {t.name: RENAMES[t.role] for t in (*spec.inputs, *spec.outputs) if t.role in RENAMES}
        for old, new in renamed.items():
            _rename_in_graph(model, old, new)
        onnx.save(model, str(scratch / file))
        files[file] = scratch / file
        io[file] = dataclasses.replace(spec, **{side: tuple(dataclasses.replace(t, name=renamed.get(t.name, t.name))
                                                            for t in getattr(spec, side))
                                                for side in ("inputs", "outputs")})
    names = {g: [t.name for t in io[f].inputs] for g, f in m.graphs.items()}
    outs = {g: [t.name for t in io[f].outputs] for g, f in m.graphs.items()}
    return update_bundle(bundle, files=files, io=io, inputs=names, outputs=outs, past_key_template="cache_in.{i}.k")


@pytest.mark.parametrize("decoder", ["standard", "fused"])
def test_renamed_tensors_answer_the_same_tokens(bundle_dir, copy, tmp_path, decoder):
    renamed = _renamed_bundle(copy, tmp_path / "scratch")
    spec = renamed.manifest.io["decoder.onnx"]
    assert spec.name("image_attention_scale") == "alpha" and spec.name("past_key.1") == "cache_in.1.k"
    inputs = [i.name for i in onnx.load(str(copy / "decoder.onnx"), load_external_data=False).graph.input]
    assert "alpha" in inputs and "image_attention_scale" not in inputs
    image = random_image(3)
    want = runtime.load(bundle_dir("tiny"), decoder=decoder)
    got = runtime.load(copy, decoder=decoder)          # checks on: the re-signed bundle verifies
    for steering in (None, STEERING, runtime.ScalingVis(1.7)):
        a = want.answer(image, QUESTION, steering=steering, max_new_tokens=6, return_attention=True)
        b = got.answer(image, QUESTION, steering=steering, max_new_tokens=6, return_attention=True)
        assert b.token_ids == a.token_ids and b.alpha == a.alpha and b.confidence == a.confidence


def _resealed(folder, edit) -> None:
    data = json.loads((folder / "manifest.json").read_text())
    edit(data["io"]["decoder.onnx"])
    data["inputs"]["decoder"] = [t["name"] for t in data["io"]["decoder.onnx"]["inputs"]]    # the lists agree
    rewrite_manifest(folder, data)


def _tensor(side: list, role: str) -> dict:
    return next(t for t in side if t["role"] == role)


@pytest.mark.parametrize("edit, message", [
    (lambda d: _tensor(d["inputs"], "image_attention_scale").update(dtype="float16"),
     r"'image_attention_scale': the manifest says float16, the graph has float32"),
    (lambda d: _tensor(d["inputs"], "image_token_mask").update(dims=["batch"]),
     r"'image_token_mask': the manifest says 1 dims \['batch'\], the graph has 2"),
    (lambda d: _tensor(d["outputs"], "logits").update(dtype="int64"), "'logits': the manifest says int64"),
], ids=["dtype", "rank", "output dtype"])
def test_a_spec_the_graph_belies_is_refused_at_load(copy, edit, message):
    _resealed(copy, edit)
    with pytest.raises(IOSpecError, match=message):
        runtime.load(copy, decoder="standard")
    assert issubclass(IOSpecError, BundleError)


def test_a_role_the_contract_needs_left_out_of_the_spec_is_refused(copy):
    _resealed(copy, lambda d: d["inputs"].pop())
    with pytest.raises(BundleError, match="the decoder graph lacks inputs image_token_mask; it has no image-attention"):
        runtime.load(copy, decoder="standard")


def test_a_name_the_graph_lacks_is_refused_naming_both_sides(copy):
    """The manifest and its name lists agree with each other, not with the graph."""
    data = json.loads((copy / "manifest.json").read_text())
    _tensor(data["io"]["embed.onnx"]["inputs"], "input_ids")["name"] = "token_ids"
    data["inputs"]["embed"] = ["token_ids"]
    rewrite_manifest(copy, data)
    with pytest.raises(IOSpecError, match=r"input_ids 'token_ids': no such input.*but the graph has \['input_ids'\]"):
        runtime.load(copy)


@pytest.mark.parametrize("edit, message", [
    (lambda io: _tensor(io["decoder.onnx"]["inputs"], "image_token_mask").update(role="image_mask"),
     "role 'image_mask' .* is not one this runtime knows"),
    (lambda io: _tensor(io["decoder.onnx"]["inputs"], "past_key.1").update(role="past_key.7"), "past_key.7"),
    (lambda io: _tensor(io["decoder.onnx"]["inputs"], "past_key.1").update(name="past_key_values.0.key"),
     "more than once"),
    (lambda io: io.update({"other.onnx": io["embed.onnx"]}), "which the manifest names as no graph"),
    (lambda io: io.pop("decoder_plain_fp32.onnx"), "io has no inputs and outputs for 'decoder_plain_fp32.onnx'"),
    (lambda io: _tensor(io["decoder.onnx"]["outputs"], "present_key.0").update(name="present.0.k"),
     r"outputs\['decoder'\] .* differs from io\['decoder.onnx'\].outputs"),
], ids=["unknown role", "layer beyond the model", "a name twice", "a graph it does not have", "a graph left out",
        "a name the name lists do not give"])
def test_a_malformed_spec_is_a_field_error_at_open(copy, edit, message):
    data = json.loads((copy / "manifest.json").read_text())
    edit(data["io"])
    rewrite_manifest(copy, data)
    for verify in (True, False):
        with pytest.raises(BundleError, match=message):
            Bundle.open(copy, verify_checksums=verify)


def test_a_bundle_from_before_the_spec_binds_the_contract_names(bundle_dir, copy):
    """The documented rule for manifests without ``io``: the names graphs.contracts gives (every earlier export's)."""
    update_bundle(Bundle.open(copy), io=None)
    assert Bundle.open(copy).manifest.io is None
    image = random_image(4)
    for decoder in ("standard", "fused"):
        a = runtime.load(bundle_dir("tiny"), decoder=decoder).answer(image, QUESTION, steering=STEERING)
        b = runtime.load(copy, decoder=decoder).answer(image, QUESTION, steering=STEERING)
        assert b.token_ids == a.token_ids and b.alpha == a.alpha
