"""A bundle is trusted only when verified: the manifest's own digest, every field, every path.

40 distinct edits, each resealed with a matching digest and loaded with checks on and off: the first
20 were found by fuzzing bundles (before these checks each crashed with a non-project exception or
answered garbage without a word), the other 20 plant one broken rule of the manifest's checks each.
"""
from __future__ import annotations

import json
import os
import shutil

import pytest

import runtime
from runtime.errors import BundleError
from tests.manifest_edit import rewrite_manifest


@pytest.fixture
def copy(bundle_dir, tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(bundle_dir("tiny"), dst)
    return dst


def _data(folder):
    return json.loads((folder / "manifest.json").read_text())


def test_an_exported_bundle_carries_its_manifest_digest(copy):
    assert (copy / "manifest.sha256").read_text().endswith("  manifest.json\n")
    runtime.load(copy)


def test_an_edited_manifest_is_refused(copy):
    text = (copy / "manifest.json").read_text()
    (copy / "manifest.json").write_text(text.replace('"eos_token_id": ', '"eos_token_id":  '))
    with pytest.raises(BundleError, match="does not match manifest.sha256.*edited"):
        runtime.load(copy)


def test_a_missing_digest_file_is_refused_unless_checks_are_off(copy):
    (copy / "manifest.sha256").unlink()
    with pytest.raises(BundleError, match="no manifest.sha256.*re-export"):
        runtime.load(copy)
    runtime.load(copy, verify_checksums=False)


def test_a_missing_checksum_table_is_refused_unless_checks_are_off(copy):
    data = _data(copy)
    del data["sha256"]
    rewrite_manifest(copy, data)
    with pytest.raises(BundleError, match="lists no sha256 for .*decoder.onnx"):
        runtime.load(copy)
    runtime.load(copy, verify_checksums=False)


def _set(path: str, value):
    def edit(data):
        *parents, last = path.split("/")
        target = data
        for key in parents:
            target = target[key]
        target[last] = value
    return edit


def _drop(path: str):
    def edit(data):
        *parents, last = path.split("/")
        target = data
        for key in parents:
            target = target[key]
        del target[last]
    return edit


def _drop_decoder_output(data):
    data["outputs"]["decoder"].remove("present.1.value")


def _digest_above_the_folder(data):
    data["sha256"]["../decoder.onnx"] = data["sha256"].pop("decoder.onnx")


def _swap_templates(data):
    data["past_key_template"], data["present_key_template"] = data["present_key_template"], data["past_key_template"]


EDITS = {
    "string layer count": (_set("decoder/num_layers", "2"), "decoder.num_layers must be an integer"),
    "boolean head count": (_set("decoder/num_attention_heads", True), "must be an integer"),
    "zero layers": (_set("decoder/num_layers", 0), "decoder.num_layers must be >= 1"),
    "heads not a multiple of kv heads": (_set("decoder/num_key_value_heads", 3), "multiple of"),
    "string eos": (_set("eos_token_id", "2"), "eos_token_id must be an integer"),
    "eos beyond the vocabulary": (_set("eos_token_id", 10 ** 9), "eos_token_id must be a token id"),
    "other placeholder in a K/V template": (_set("past_key_template", "past_key_values.{j}.key"), r"placeholder"),
    "no placeholder in a K/V template": (_set("present_value_template", "present.value"), r"placeholder"),
    "past and present swapped": (_swap_templates, "not an input of the decoder"),
    "prompt without question": (_set("prompt_template", "USER: <image>\nASSISTANT:"), r"\{question\}"),
    "prompt with another field": (_set("prompt_template", "USER: <image>\n{question} {x} ASSISTANT:"), "placeholder"),
    "prompt without image": (_set("prompt_template", "USER: {question} ASSISTANT:"), "image_placeholder"),
    "image std zero": (_set("preprocessing/image_std", [0.0, 0.2, 0.2]), "image_std must be positive"),
    "image mean of two": (_set("preprocessing/image_mean", [0.5, 0.5]), "must have 3 entries"),
    "dtype unknown": (_set("dtype", "int3"), "dtype must be one of"),
    "unknown field": (_set("decoder_typo", 1), "unknown field"),
    "tokenizer outside": (_set("tokenizer_file", "/etc/passwd"), "inside the bundle folder"),
    "tokenizer above": (_set("tokenizer_file", "../tokenizer.json"), "inside the bundle folder"),
    "graph outside": (_set("graphs/decoder", "/tmp/decoder.onnx"), "inside the bundle folder"),
    "bad digest": (_set("sha256/decoder.onnx", "xyz"), "64 lowercase hex"),
    "missing field": (_drop("eos_token_id"), "eos_token_id is missing"),
    "preprocessing a list": (_set("preprocessing", [1, 2]), "preprocessing must be a JSON object"),
    "graphs a list": (_set("graphs", ["decoder.onnx"]), "graphs must be an object"),
    "image mean a number": (_set("preprocessing/image_mean", 0.5), "image_mean must be a list"),
    "rescale factor not finite": (_set("preprocessing/rescale_factor", float("inf")), "must be a finite number"),
    "rescale factor above one": (_set("preprocessing/rescale_factor", 2.0), r"rescale_factor must be in \(0, 1\]"),
    "crop height zero": (_set("preprocessing/crop_height", 0), "preprocessing.crop_height must be >= 1"),
    "image token beyond the vocabulary": (_set("image_token_id", 10 ** 6), "image_token_id must be a token id"),
    "negative pad token": (_set("pad_token_id", -1), "pad_token_id must be a token id"),
    "grid not the image tokens": (_set("image_grid", [4, 5]), "does not give image_tokens_per_image"),
    "grid without rows": (_set("image_grid", [0, 25]), "image_grid must be >= 1"),
    "grid of three numbers": (_set("image_grid", [5, 5, 1]), r"image_grid must be \[rows, cols\]"),
    "template a number": (_set("past_key_template", 5), "past_key_template must be a str"),
    "malformed template": (_set("prompt_template", "USER: <image>\n{question ASSISTANT:"), "not a valid template"),
    "image placeholder twice": (_set("prompt_template", "USER: <image><image>\n{question} ASSISTANT:"),
                                "exactly once"),
    "attention form unknown": (_set("attention_form", "softmax-free"), "attention_form must be one of"),
    "key and value templates alike": (_set("past_value_template", "past_key_values.{i}.key"), "must differ"),
    "embed graph missing": (_drop("graphs/embed"), "must each name the 'embed' graph"),
    "a present output missing": (_drop_decoder_output, "not an output of the decoder"),
    "fused decoder without a file": (_set("fused_decoders", {"fp32": {"nodes_per_layer": 25}}),
                                     r"fused_decoders\['fp32'\]\['plain'\] must name a file"),
    "digest of a file above the folder": (_digest_above_the_folder, "sha256 key .* inside the bundle folder"),
}


@pytest.mark.parametrize("edit,message", EDITS.values(), ids=EDITS.keys())
@pytest.mark.parametrize("verify", [True, False], ids=["checks on", "checks off"])
def test_a_resealed_bad_field_is_refused_with_its_name(copy, edit, message, verify):
    """Even with a matching digest (or checks off), every field is checked before use."""
    data = _data(copy)
    edit(data)
    rewrite_manifest(copy, data)
    with pytest.raises(BundleError, match=message):
        runtime.load(copy, verify_checksums=verify)


def test_the_forty_edits_make_forty_different_manifests(copy):
    edited = set()
    for edit, _ in EDITS.values():
        data = _data(copy)
        edit(data)
        edited.add(json.dumps(data, sort_keys=True))
    assert len(EDITS) >= 40 and len(edited) == len(EDITS) and json.dumps(_data(copy), sort_keys=True) not in edited


@pytest.mark.parametrize("verify", [True, False], ids=["checks on", "checks off"])
def test_a_symlink_out_of_the_folder_is_refused(copy, tmp_path, verify):
    """The same bytes behind the link (its digest matches): refused for where it leads."""
    outside = tmp_path / "elsewhere.json"
    shutil.copy(copy / "tokenizer.json", outside)
    (copy / "tokenizer.json").unlink()
    os.symlink(outside, copy / "tokenizer.json")
    with pytest.raises(BundleError, match="leads outside the bundle folder"):
        runtime.load(copy, verify_checksums=verify)
