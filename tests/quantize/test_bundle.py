"""The quantized bundle as a folder: atomic, self-describing, and refused for bad sources and targets.

Every refusal is a QuantizeError subclass (an occupied target: runtime's BundleExistsError) whose message
says what was expected, and leaves
neither a bundle nor a partial folder behind; the source is never modified.
"""
from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

import runtime
from graphs.manifest import Manifest
from quantize import (AlreadyQuantizedError, BundleExistsError, OptionError, QuantizeError, SourceBundleError,
                      quantize_bundle)
from quantize import bundle as B
from quantize import weights as W
from runtime.bundle import sha256_file
from runtime.bundle_write import write_calibration
from tests.manifest_edit import rewrite_manifest


def _snapshot(folder):
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file()}


def _leftovers(parent):
    return sorted(p.name for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name)


@pytest.fixture
def source(bundle_dir, tmp_path):
    dst = tmp_path / "src"
    shutil.copytree(bundle_dir("tiny"), dst)
    return dst


def _quantize(src, out, to="int4", **kw):
    return quantize_bundle(src, out, to=to, log=lambda m: None, **kw)


def test_manifest_records_the_method_and_the_source(quantized_dir, bundle_dir):
    folder = quantized_dir("tiny", "int4")
    manifest = runtime.load(folder).manifest             # sha256 of every file checked by the runtime
    q = manifest.quantization
    assert q["precision"] == "int4" and q["bits"] == 4 and q["block_size"] == 32
    assert q["symmetric"] is False and q["accuracy_level"] == 4 and q["tool"].endswith("MatMulNBitsQuantizer")
    import hashlib
    assert q["source_sha256"] == hashlib.sha256((bundle_dir("tiny") / "manifest.json").read_bytes()).hexdigest()
    assert q["source_bundle"] == str(bundle_dir("tiny").resolve()) and q["io_dtype"] == manifest.dtype == "fp32"
    assert set(manifest.sha256) == {p.name for p in folder.iterdir() if p.name not in ("manifest.json", "manifest.sha256")}
    assert manifest.sha256["embed.onnx"] == sha256_file(bundle_dir("tiny") / "embed.onnx")     # copied unchanged
    assert manifest.sha256["decoder.onnx"] != sha256_file(bundle_dir("tiny") / "decoder.onnx")
    fp16 = runtime.load(quantized_dir("tiny", "fp16")).manifest.quantization
    assert (fp16["bits"], fp16["block_size"], fp16["symmetric"], fp16["accuracy_level"]) == (16, None, None, None)
    assert fp16["tool"].endswith("convert_float_to_float16")


def test_old_manifests_without_the_field_still_load(bundle_dir):
    data = json.loads((bundle_dir("tiny") / "manifest.json").read_text())
    data.pop("quantization", None)
    assert Manifest.from_dict(data).quantization is None


def test_the_source_is_never_modified_and_calibration_is_not_copied(source, tmp_path):
    write_calibration(source, {"adaptvis": {"alpha_low": 0.5, "alpha_high": 2.0, "threshold": 0.1}})   # signed
    before = _snapshot(source)
    _quantize(source, tmp_path / "out", to="fp16")
    assert _snapshot(source) == before
    assert not (tmp_path / "out" / "calibration.json").exists()
    assert runtime.load(tmp_path / "out").default_steering == runtime.PAPER_DEFAULT


def test_default_out_is_beside_the_source(source):
    _quantize(source, None, to="int8")
    assert runtime.load(source.parent / "src-int8").manifest.quantization["precision"] == "int8"


def test_quantizing_a_quantized_bundle_is_refused(quantized_dir, tmp_path):
    with pytest.raises(AlreadyQuantizedError, match="already quantized .*int4.*quantize its fp32 source"):
        _quantize(quantized_dir("tiny", "int4"), tmp_path / "twice", to="int8")
    assert list(tmp_path.iterdir()) == []


def test_a_quantized_graph_behind_a_plain_manifest_is_refused(quantized_dir, tmp_path):
    src = tmp_path / "disguised"
    shutil.copytree(quantized_dir("tiny", "int8"), src)
    data = json.loads((src / "manifest.json").read_text())
    data["quantization"] = None
    rewrite_manifest(src, data)
    with pytest.raises(AlreadyQuantizedError, match="14 MatMulNBits nodes"):
        _quantize(src, tmp_path / "out", to="int4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["disguised"]


def test_a_target_holding_a_bundle_is_refused_then_replaced_with_force(source, tmp_path, quantized_dir):
    out = tmp_path / "out"
    shutil.copytree(quantized_dir("tiny", "fp16"), out)
    before = _snapshot(out)
    with pytest.raises(BundleExistsError, match="already holds a bundle; pass --force"):
        _quantize(source, out, to="int4")
    assert _snapshot(out) == before and _leftovers(tmp_path) == []
    _quantize(source, out, to="int4", force=True)
    assert runtime.load(out).manifest.quantization["precision"] == "int4" and _leftovers(tmp_path) == []


def test_a_non_empty_folder_or_the_source_itself_is_refused(source, tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(BundleExistsError, match="not an empty folder"):
        _quantize(source, busy)
    for target in (source, source / "inside", source.parent):
        with pytest.raises(BundleExistsError, match="source is never modified"):
            _quantize(source, target, force=True)
    assert (busy / "notes.txt").read_text() == "mine" and _leftovers(tmp_path) == []


@pytest.mark.parametrize("damage", ["flip a byte", "missing graph", "no manifest", "bad json"])
def test_a_damaged_source_is_refused_and_nothing_is_written(source, tmp_path, damage):
    if damage == "flip a byte":
        data = bytearray((source / "decoder.onnx").read_bytes())
        data[len(data) // 2] ^= 0xFF
        (source / "decoder.onnx").write_bytes(bytes(data))
        match = "checksum"
    elif damage == "missing graph":
        (source / "vision.onnx").unlink()
        match = "missing vision.onnx"
    elif damage == "no manifest":
        (source / "manifest.json").unlink()
        match = "no manifest.json"
    else:
        (source / "manifest.json").write_text("{")
        match = "not valid JSON"
    with pytest.raises(SourceBundleError, match=f"cannot quantize .*{match}"):
        _quantize(source, tmp_path / "out")
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path) == []


def test_an_fp16_export_is_refused(source, tmp_path):
    data = json.loads((source / "manifest.json").read_text())
    data["dtype"] = "fp16"
    rewrite_manifest(source, data)
    with pytest.raises(SourceBundleError, match="fp16 export; quantization starts from an fp32 export"):
        _quantize(source, tmp_path / "out")


@pytest.mark.parametrize("kwargs,match", [
    ({"to": "int3"}, "--to must be one of fp16, int8, int4, int8-dynamic"),
    ({"to": "int8-dynamic", "block_size": 64}, "--block-size and --accuracy-level are MatMulNBits settings"),
    ({"to": "int8-dynamic", "accuracy_level": 4}, "--block-size and --accuracy-level are MatMulNBits settings"),
    ({"to": "fp16", "block_size": 32}, "--block-size and --accuracy-level are MatMulNBits settings"),
    ({"to": "fp16", "symmetric": True}, "--symmetric is an integer setting"),
    ({"to": "int4", "block_size": 16}, "--block-size must be one of 32, 64, 128"),
    ({"to": "int8", "accuracy_level": 7}, "--accuracy-level must be one of"),
    ({"to": "int4", "embed": True}, "--embed works with --to fp16 only"),
    ({"to": "fp16", "report": True, "report_items": 2}, "--report-items must be an int >= 4"),
    ({"to": "fp16", "report_items": True}, "--report-items must be an int >= 4"),
    ({"to": "int4", "bits": 3}, "unknown quantize option.*bits"),
    ({"symmetric": True}, "the precision is required"),
])
def test_bad_options_are_refused_before_any_work(source, tmp_path, kwargs, match):
    with pytest.raises(OptionError, match=match):
        quantize_bundle(source, tmp_path / "out", log=lambda m: None, **kwargs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_a_failure_midway_leaves_nothing_behind(source, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(W, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        _quantize(source, tmp_path / "out")
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path) == []


def test_a_bundle_the_runtime_cannot_load_is_not_published(source, tmp_path, monkeypatch):
    real = B.write_quantized

    def corrupting(src, folder, settings, log):
        written = real(src, folder, settings, log)
        (folder / "decoder.onnx").write_bytes(b"not onnx")
        return written
    monkeypatch.setattr(B, "write_quantized", corrupting)
    with pytest.raises(QuantizeError, match="does not load in the runtime"):
        _quantize(source, tmp_path / "out")
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path) == []


def test_graphs_with_external_weights_are_read_copied_and_written(source, tmp_path, monkeypatch, quantized_dir):
    """A > 2 GB export keeps its weights in <graph>.onnx_data: read it, copy it, write one (threshold lowered here)."""
    import numpy as np
    import onnx

    from quantize.report import first_token_logits
    for graph in ("vision", "decoder"):
        model = onnx.load(str(source / f"{graph}.onnx"))
        onnx.save_model(model, str(source / f"{graph}.onnx"), save_as_external_data=True,
                        all_tensors_to_one_file=True, location=f"{graph}.onnx_data", size_threshold=0)
    data = json.loads((source / "manifest.json").read_text())
    data["sha256"] = {p.name: sha256_file(p) for p in sorted(source.iterdir()) if p.name not in ("manifest.json", "manifest.sha256")}
    rewrite_manifest(source, data)
    monkeypatch.setattr(W, "_EXTERNAL_OVER", 0)
    manifest = _quantize(source, tmp_path / "out", to="int4")
    assert {"decoder.onnx_data", "vision.onnx_data"} <= set(manifest.sha256)
    assert manifest.sha256["vision.onnx_data"] == sha256_file(source / "vision.onnx_data")   # copied as it was
    ours, reference = runtime.load(tmp_path / "out"), runtime.load(quantized_dir("tiny", "int4"))
    image = np.full((30, 30, 3), 120, dtype=np.uint8)
    a = first_token_logits(ours, image, "Where is it?", {"1": 1.0})["1"]
    b = first_token_logits(reference, image, "Where is it?", {"1": 1.0})["1"]
    np.testing.assert_array_equal(a, b)                 # the same quantization, however the weights were stored


def test_default_accuracy_level_is_int8_arithmetic():
    from quantize.settings import Settings

    assert Settings("int8").check().accuracy_level == 4 and Settings("int4").check().accuracy_level == 4
    assert Settings("int8", accuracy_level=0).check().accuracy_level == 0          # still a choice


def test_the_settings_are_checked_once_and_passed_whole(source, tmp_path):
    from quantize.settings import Settings

    settings = Settings.build(to="int4", block_size=64)
    assert (settings.block_size, settings.accuracy_level, settings.report_items) == (64, 4, 40)
    manifest = quantize_bundle(source, tmp_path / "out", settings, log=lambda m: None)
    assert (manifest.quantization["precision"], manifest.quantization["block_size"]) == ("int4", 64)
    with pytest.raises(OptionError, match="--block-size must be one of"):
        Settings.build(settings, block_size=48)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.to = "int8"
