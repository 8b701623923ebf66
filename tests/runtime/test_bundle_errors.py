"""A bundle that is incomplete, corrupted, of another schema, or without steering inputs is refused clearly."""
from __future__ import annotations

import json
import math
import shutil

import onnx
import pytest

import runtime
from runtime.errors import BundleError, ProviderError
from tests.manifest_edit import rewrite_manifest


@pytest.fixture
def copy(bundle_dir, tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(bundle_dir("tiny"), dst)
    return dst


def test_missing_folder(tmp_path):
    with pytest.raises(BundleError, match="does not exist"):
        runtime.load(tmp_path / "nothing")


def test_missing_manifest(copy):
    (copy / "manifest.json").unlink()
    with pytest.raises(BundleError, match="no manifest.json"):
        runtime.load(copy)


@pytest.mark.parametrize("name", ["decoder.onnx", "tokenizer.json"])
def test_missing_file(copy, name):
    (copy / name).unlink()
    with pytest.raises(BundleError, match=f"missing {name}"):
        runtime.load(copy)


def test_checksum_mismatch(copy):
    with open(copy / "embed.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match="checksum"):
        runtime.load(copy)


def test_unknown_schema(copy):
    data = json.loads((copy / "manifest.json").read_text())
    data["schema_version"] = 99
    rewrite_manifest(copy, data)
    with pytest.raises(BundleError, match="schema version 99"):
        runtime.load(copy)


def test_malformed_manifest(copy):
    (copy / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        runtime.load(copy)
    rewrite_manifest(copy, {"schema_version": 1, "graphs": {}})
    with pytest.raises(BundleError, match="malformed"):
        runtime.load(copy)


def test_decoder_without_steering_inputs(copy):
    """A plain decoder (the steering inputs folded into constants) is not a bundle of ours."""
    model = onnx.load(str(copy / "decoder.onnx"))
    graph = model.graph
    for name in ("image_attention_scale", "image_token_mask"):
        vi = next(i for i in graph.input if i.name == name)
        graph.input.remove(vi)
        graph.value_info.append(vi)
        graph.node.insert(0, onnx.helper.make_node("Identity", [f"{name}_const"], [name]))
        dims = [1, 2, 4] if name == "image_attention_scale" else [1, 1]
        kind = onnx.TensorProto.FLOAT if name == "image_attention_scale" else onnx.TensorProto.BOOL
        graph.initializer.append(onnx.helper.make_tensor(f"{name}_const", kind, dims, [1] * math.prod(dims)))
    onnx.save(model, str(copy / "decoder.onnx"))
    with pytest.raises(BundleError, match="steering inputs"):
        runtime.load(copy, verify_checksums=False, decoder="standard")


def test_unavailable_provider_is_an_error_listing_the_available_ones(bundle_dir):
    import onnxruntime as ort

    missing = [p for p in ("cuda", "tensorrt") if {"cuda": "CUDAExecutionProvider",
                                                     "tensorrt": "TensorrtExecutionProvider"}[p]
               not in ort.get_available_providers()]
    if not missing:
        pytest.skip("every provider is available on this machine")
    with pytest.raises(ProviderError, match="CPUExecutionProvider"):
        runtime.load(bundle_dir("tiny"), providers=[missing[0]])
    with pytest.warns(RuntimeWarning, match="falling back"):
        vlm = runtime.load(bundle_dir("tiny"), providers=[missing[0], "cpu"], fallback=True)
    assert vlm.providers == ["CPUExecutionProvider"]
    with pytest.raises(ProviderError, match="unknown provider"):
        runtime.load(bundle_dir("tiny"), providers=["tpu"])
