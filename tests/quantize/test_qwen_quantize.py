"""Quantized Qwen2.5-VL / Qwen3-VL bundles: MatMulNBits in the decoder and the fused pair, a signed Qwen manifest
that records it, answers through the Qwen loops, the distance from the fp32 bundle measured, bad input refused."""
from __future__ import annotations

import io
import json
import shutil

import numpy as np
import onnx
import pytest
from PIL import Image

from graphs.manifest import manifest_digest_line
from graphs.qwen_manifest import QwenManifest
from quantize import AlreadyQuantizedError, OptionError, SourceBundleError, quantize_bundle
from quantize.__main__ import main
from runtime.bundle import sha256_file
from runtime.qwen_vl.answer import QwenModel
from runtime.qwen_vl.fused_decoder import QwenFusedModel
from tests.conftest import random_image

FAMILIES = ("tiny-qwen2.5-vl", "tiny-qwen3-vl")


def _ops(path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for n in onnx.load(str(path), load_external_data=False).graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return counts


@pytest.mark.parametrize("size", FAMILIES)
def test_int4_converts_the_decoder_and_the_fused_pair_and_records_it_in_a_signed_qwen_manifest(
        size, quantized_qwen_dir, qwen_bundle_dir):
    source, folder = qwen_bundle_dir(size), quantized_qwen_dir(size, "int4", report=True, report_items=4)
    m, src = QwenManifest.read(folder), QwenManifest.read(source)
    q = m.quantization
    assert (q["precision"], q["bits"], q["block_size"], q["accuracy_level"]) == ("int4", 4, 32, 4)
    assert q["source_sha256"] == sha256_file(source / "manifest.json") and q["report"] == "quantization.md"
    assert q["graphs"]["vision"] == {"copied": True} and q["graphs"]["embed"] == {"copied": True}
    decoder = q["graphs"]["decoder"]
    # q, k, v, o, gate, up, down in every layer; the LM head kept as exported
    assert decoder["matmulnbits"] == decoder["weight_matmuls"] - 1 == 7 * src.decoder["num_layers"]
    assert list(decoder["skipped"]) and "LM head" in next(iter(decoder["skipped"].values()))
    assert _ops(folder / "decoder.onnx").get("MatMulNBits") == decoder["matmulnbits"]
    record = m.fused_decoders["fp32"]
    assert record["quantization"]["bits"] == 4
    for which in ("plain", "steered"):
        assert _ops(folder / record[which]).get("MatMulNBits") == q["graphs"][f"fused_fp32_{which}"]["matmulnbits"] > 0
    for f in ("vision.onnx", "embed.onnx", "tokenizer.json", "preprocessor_config.json", "chat_template.json"):
        assert sha256_file(folder / f) == src.sha256[f], f
    # the bundle writer signed it: every file but the manifest and its digest, the digest of the bytes written
    files = sorted(p.name for p in folder.iterdir() if p.name not in ("manifest.json", "manifest.sha256"))
    assert sorted(m.sha256) == files and all(m.sha256[f] == sha256_file(folder / f) for f in files)
    assert (folder / "manifest.sha256").read_text() == manifest_digest_line((folder / "manifest.json").read_bytes())
    assert (m.family, m.graphs, m.prompt_template) == (src.family, src.graphs, src.prompt_template)


@pytest.mark.parametrize("size", FAMILIES)
def test_the_report_measures_logits_and_greedy_tokens_against_the_fp32_bundle(size, quantized_qwen_dir):
    m = QwenManifest.read(quantized_qwen_dir(size, "int4", report=True, report_items=4))
    accuracy = m.quantization["accuracy"]
    assert set(accuracy["decoders"]) == {"standard", "fused"}
    for decoder in accuracy["decoders"].values():
        f, b = decoder["fixed_prompts"], decoder["benchmark"]
        assert f["n_prompts"] == 4 and set(f["per_alpha"]) == {"0.5", "1", "2", "per-head"}
        assert 0 < f["max_abs_dlogits"] < 10 and 0 <= f["max_kl"] < 1          # moved, but not beyond recognition
        assert b["n_items"] == 4 and 0 <= b["none"]["all_tokens_agreement"] <= 1
    assert accuracy["fixed_prompts"] == accuracy["decoders"]["fused"]["fixed_prompts"]
    text = (quantized_qwen_dir(size, "int4", report=True, report_items=4) / "quantization.md").read_text()
    assert "first token same" in text and "fused" in text and m.family in text


@pytest.mark.parametrize("size", FAMILIES)
def test_int8_stays_close_to_the_fp32_bundle_and_both_loops_answer(size, quantized_qwen_dir, qwen_bundle_dir):
    from quantize.qwen_report import alpha_cases, first_token_logits

    folder = quantized_qwen_dir(size, "int8")
    image = Image.fromarray(random_image(3, 60, 90))            # the Qwen loops take a PIL image
    question = "Where is the red ball in relation to the blue box?"
    src = QwenModel(qwen_bundle_dir(size))
    for model in (QwenModel(folder), QwenFusedModel(folder)):
        want = first_token_logits(src, image, question, alpha_cases(src))
        got = first_token_logits(model, image, question, alpha_cases(src))
        for case in want:
            d = np.abs(got[case] - want[case]).max()      # measured up to 0.16 x the largest logit (Qwen2.5-VL)
            assert 0 < d < 0.4 * np.abs(want[case]).max(), (type(model).__name__, case, d)
        assert model.answer(image, question, max_new_tokens=4).token_ids is not None


def test_int8_dynamic_converts_the_decoder_and_leaves_the_pair_out(quantized_qwen_dir):
    folder = quantized_qwen_dir("tiny-qwen3-vl", "int8-dynamic")
    m = QwenManifest.read(folder)
    assert m.fused_decoders is None and "not_converted" in m.quantization["graphs"]["fused_fp32"]
    assert _ops(folder / "decoder.onnx").get("MatMulInteger") == m.quantization["graphs"]["decoder"]["matmulinteger"] > 0
    assert not list(folder.glob("decoder_*fp32*"))
    with pytest.raises(Exception, match="no fused fp32 decoder"):
        QwenFusedModel(folder)
    assert QwenModel(folder).answer(Image.fromarray(random_image(1)), "Where?", max_new_tokens=2) is not None


def test_what_cannot_work_is_refused_with_a_typed_error_and_nothing_written(qwen_bundle_dir, quantized_qwen_dir,
                                                                            tmp_path):
    source = qwen_bundle_dir("tiny-qwen2.5-vl")
    with pytest.raises(OptionError, match="fp16 is not offered for Qwen"):
        quantize_bundle(source, tmp_path / "a", to="fp16", log=lambda m: None)
    with pytest.raises(AlreadyQuantizedError):
        quantize_bundle(quantized_qwen_dir("tiny-qwen2.5-vl", "int8"), tmp_path / "b", to="int4", log=lambda m: None)
    damaged = tmp_path / "damaged"
    shutil.copytree(source, damaged)
    (damaged / "embed.onnx").write_bytes((damaged / "embed.onnx").read_bytes() + b"\0")
    with pytest.raises(SourceBundleError, match="embed.onnx does not match its checksum"):
        quantize_bundle(damaged, tmp_path / "c", to="int4", log=lambda m: None)
    data = json.loads((source / "manifest.json").read_text())
    (damaged / "manifest.json").write_text(json.dumps({**data, "deepstack_layers": "two"}))
    with pytest.raises(SourceBundleError, match="deepstack_layers"):
        quantize_bundle(damaged, tmp_path / "d", to="int4", log=lambda m: None)
    err = io.StringIO()
    assert main([str(source), "--to", "fp16", "--out", str(tmp_path / "e"), "--quiet"], err=err) == 2
    assert "fp16 is not offered for Qwen" in err.getvalue()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged"]
