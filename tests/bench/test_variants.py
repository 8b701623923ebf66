"""The bench's variants: names parsed strictly, and the decoder with its attention outputs pruned away."""
from __future__ import annotations

import json
import shutil

import pytest

from bench import variants
from runtime.errors import BundleError
from tests.conftest import random_image


def test_variant_names_parse_strictly():
    assert variants.parse("int4, fp16,int4") == ["int4", "fp16"]
    assert variants.parse("none") == [] and variants.parse("") == []
    with pytest.raises(ValueError, match="unknown variants.*int3"):
        variants.parse("int3")


def test_pruned_bundle_answers_like_its_source_and_refuses_attention(tmp_path, bundle_dir):
    import runtime

    source = tmp_path / "bundle"
    shutil.copytree(bundle_dir("tiny"), source)       # the variant is built beside it: not beside the shared bundle
    [variant] = variants.prepare(source.resolve(), ["no-attention-outputs"], log=lambda m: None)
    assert variant.built and variant.side == "ours_no_attention_outputs"
    manifest = json.loads((variant.bundle / "manifest.json").read_text())
    assert not set(variants.ATTENTION_OUTPUTS) & set(manifest["outputs"]["decoder"])
    image = random_image(3)
    want = runtime.load(source).answer(image, "Where is it?", max_new_tokens=6)
    pruned = runtime.load(variant.bundle)
    got = pruned.answer(image, "Where is it?", max_new_tokens=6)
    assert got.token_ids == want.token_ids and abs(got.confidence - want.confidence) < 1e-6
    with pytest.raises(BundleError, match="(?i)re-export"):
        pruned.answer(image, "Where is it?", max_new_tokens=2, return_attention=True)
    # built once: a second prepare reuses it
    assert not variants.prepare(source.resolve(), ["no-attention-outputs"], log=lambda m: None)[0].built


def test_quantized_variants_are_built_once_and_rebuilt_when_their_settings_change(tmp_path, bundle_dir, monkeypatch):
    source = tmp_path / "src"
    shutil.copytree(bundle_dir("tiny"), source)
    [first] = variants.prepare(source, ["int8-dynamic"], log=lambda m: None)
    assert first.built and first.bundle == tmp_path / "src-int8-dynamic"
    record = json.loads((first.bundle / "manifest.json").read_text())["quantization"]
    assert record["precision"] == "int8-dynamic" and record["lm_head"] == "quantized"
    assert record["graphs"]["vision"] == {"copied": True}
    assert not variants.prepare(source, ["int8-dynamic"], log=lambda m: None)[0].built
    monkeypatch.setitem(variants.QUANTIZE, "int8-dynamic", {**variants.QUANTIZE["int8-dynamic"], "vision": True})
    [again] = variants.prepare(source, ["int8-dynamic"], log=lambda m: None)
    assert again.built
    assert json.loads((again.bundle / "manifest.json").read_text())["quantization"]["graphs"]["vision"]["matmulinteger"]
