"""The accuracy cost: measured against the source, written into the manifest and quantization.md."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

import runtime
from quantize import quantize_bundle
from quantize.report import kl, markdown, measure, steering_cosine
from quantize.tolerances import TOLERANCES
from runtime.bundle_write import write_calibration


def test_kl_and_cosine_basics():
    x = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    assert kl(x, x) == 0.0 and kl(x, x + 5) == pytest.approx(0.0, abs=1e-12)      # a shift is the same distribution
    assert kl(x, x[::-1].copy()) > 0.5
    a = {"1": x, "2": x * 2}
    assert steering_cosine(a, {"1": x + 1, "2": x * 2 + 1}, "2") == pytest.approx(1.0)
    assert steering_cosine(a, {"1": x, "2": x * 0}, "2") == pytest.approx(-1.0)


@pytest.fixture(scope="module")
def calibrated(bundle_dir, tmp_path_factory):
    """tiny with a calibration.json whose threshold sits among its confidences, so AdaptVis picks both alphas."""
    from quantize.report import synthetic_items
    src = tmp_path_factory.mktemp("cal") / "src"
    shutil.copytree(bundle_dir("tiny"), src)
    vlm = runtime.load(src)
    items = synthetic_items(tmp_path_factory.mktemp("syn"), 12, seed=0)
    conf = sorted(vlm.answer(i.image_path, i.question, steering=None, max_new_tokens=1).confidence for i in items)
    threshold = round(float(np.median(conf)), 4)
    write_calibration(vlm.bundle, {"adaptvis": {"alpha_low": 0.5, "alpha_high": 2.0, "threshold": threshold}})
    return src, threshold


@pytest.mark.parametrize("to", ["fp16", "int4", "int8-dynamic"])
def test_report_measures_logits_agreement_accuracy_and_alpha_flips(calibrated, tmp_path, to):
    src, threshold = calibrated
    out = tmp_path / "q"
    manifest = quantize_bundle(src, out, to=to, report=True, report_items=12, log=lambda m: None)
    acc = manifest.quantization["accuracy"]
    assert runtime.load(out).manifest.quantization["accuracy"] == acc       # in the manifest the runtime reads
    f, b = acc["fixed_prompts"], acc["benchmark"]
    assert f["n_prompts"] == 8 and f["alphas"] == ["0.5", "1", "2", "per-head"]
    assert 0 <= f["mean_abs_dlogits"] <= f["max_abs_dlogits"] and f["max_kl"] >= f["mean_kl"] >= 0
    assert f["tolerance"] == TOLERANCES[to].as_dict() and f["within_tolerance"] is True
    assert b["n_items"] == 12 and b["steering"]["threshold"] == threshold
    assert b["steering"]["from"] == "the source's calibration"
    for name in ("none", "adaptvis"):
        r = b[name]
        assert 0 <= r["all_tokens_agreement"] <= r["first_token_agreement"] <= 1
        assert r["accuracy_delta"] == pytest.approx(r["accuracy_quantized"] - r["accuracy_source"])
    if to == "fp16":
        assert b["none"]["first_token_agreement"] == 1.0 and b["alpha_changed"] == 0   # later tokens may part at a near-tie
    # An alpha flip needs a confidence within the largest drift of the threshold.
    assert b["alpha_changed"] <= b["near_threshold"]
    text = (out / "quantization.md").read_text()
    assert text == markdown(manifest, acc)
    assert f"# Quantization report: {to}" in text and "| per-head |" in text and "AdaptVis chose a different alpha" in text
    assert "quantization.md" in manifest.sha256
    if to == "int8-dynamic":
        assert "weight MatMuls -> MatMulInteger (weights uint8 with zero points, per channel" in text


def test_measure_counts_a_flip_when_a_confidence_crosses_the_threshold(calibrated, tmp_path):
    src, _ = calibrated
    # int4 on tiny moves confidences by a few hundredths: with the threshold at the median some cross it.
    q = tmp_path / "q"
    quantize_bundle(src, q, to="int4", log=lambda m: None)
    b = measure(src, q, n_items=12, seed=0, fixed=2)["benchmark"]
    flips = b["alpha_changed"]
    assert b["alpha_changed_fraction"] == pytest.approx(flips / 12)
    assert b["confidence_abs_delta"]["max"] > 0
    assert 1 <= flips <= b["near_threshold"]          # 6 of 12 here: tiny's confidences sit within 0.06-0.19
