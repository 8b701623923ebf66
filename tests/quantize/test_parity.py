"""The steering survives: a quantized bundle against its source, at alpha 0.5, 1, 2 and a per-layer-per-head alpha.

Tolerances per precision: quantize.tolerances.TOLERANCES (findings on these tiny models, documented
in docs/quantize.md).  Then the runtime answers with AdaptVis on the quantized bundle, as it is.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

import runtime
from quantize.report import alpha_cases, compare_logits, first_token_logits
from quantize.tolerances import TOLERANCES

from .conftest import PRECISIONS


def _within(report: dict, to: str) -> None:
    t = TOLERANCES[to]
    assert report["max_abs_dlogits"] <= t.max_abs_dlogits, report
    assert report["max_kl"] <= t.max_kl, report
    assert report["min_steering_cosine"] >= t.min_steering_cosine, report


@pytest.mark.parametrize("to", PRECISIONS)
def test_logits_stay_within_the_documented_tolerance_at_every_alpha(quantized_dir, bundle_dir, prompts, size, to):
    source = runtime.load(bundle_dir(size))
    quantized = runtime.load(quantized_dir(size, to))
    cases = alpha_cases(source)
    assert list(cases) == ["0.5", "1", "2", "per-head"]
    assert np.asarray(cases["per-head"]).shape == (source.manifest.decoder.num_layers,
                                                   source.manifest.decoder.num_attention_heads)
    report = compare_logits(source, quantized, prompts, cases)
    for case in cases:
        _within({**report["per_alpha"][case], "min_steering_cosine": report["min_steering_cosine"]}, to)
    _within(report, to)
    if to != "int4":     # int4 moves tiny random models' near-tied top tokens (see docs/quantize.md)
        assert report["top_token_agreement"] >= 0.9


@pytest.mark.parametrize("to,block_size,symmetric", [
    ("int8", 64, True), ("int8", 128, False), ("int4", 64, False), ("int4", 128, True), ("int4", 32, True)])
def test_other_block_sizes_hold_the_same_tolerance(quantized_dir, bundle_dir, prompts, to, block_size, symmetric):
    # tiny-mha: K = 48 and 96, so every block size pads some K
    source = runtime.load(bundle_dir("tiny-mha"))
    quantized = runtime.load(quantized_dir("tiny-mha", to, block_size=block_size, symmetric=symmetric))
    _within(compare_logits(source, quantized, prompts, alpha_cases(source)), to)


@pytest.mark.parametrize("to", PRECISIONS)
def test_alpha_still_moves_the_answer(quantized_dir, prompts, to):
    """In the quantized graph alpha is not a no-op: 0.5 and 2 change the logits as much as in the source (give or take)."""
    quantized = runtime.load(quantized_dir("tiny", to))
    image, question = prompts[0]
    logits = first_token_logits(quantized, image, question, alpha_cases(quantized))
    for case in ("0.5", "2", "per-head"):
        assert np.abs(logits[case] - logits["1"]).max() > 0.05


@pytest.mark.parametrize("to", PRECISIONS)
def test_the_runtime_answers_with_adaptvis_as_it_is(quantized_dir, bundle_dir, synthetic, size, to):
    source = runtime.load(bundle_dir(size))
    quantized = runtime.load(quantized_dir(size, to))                   # nothing new: runtime.load as it is
    assert quantized.default_steering == runtime.PAPER_DEFAULT
    item = synthetic[0]
    confidence = source.answer(item.image_path, item.question, steering=None, max_new_tokens=1).confidence
    # A threshold just below this item's confidence: the source picks `high`; the others straddle it.
    steering = runtime.AdaptVis(low=0.5, high=2.0, threshold=round(confidence - 0.01, 4))
    drift = []
    for item in synthetic:
        a = source.answer(item.image_path, item.question, steering=steering, max_new_tokens=4)
        b = quantized.answer(item.image_path, item.question, steering=steering, max_new_tokens=4)
        assert b.steering == "adaptvis" and b.alpha in (0.5, 2.0) and b.confidence is not None
        assert len(b.token_ids) >= 1 or b.text == ""
        drift.append(abs(a.confidence - b.confidence))
        # The alpha differs only where the confidence moved across the threshold.
        if a.alpha != b.alpha:
            assert abs(a.confidence - steering.threshold) <= abs(a.confidence - b.confidence)
        if to == "fp16":
            assert a.alpha == b.alpha and a.token_ids == b.token_ids
    limit = {"fp16": 2e-3, "int8": 1e-2, "int4": 0.1, "int8-dynamic": 2e-2}[to]
    assert max(drift) <= limit


def test_scalingvis_and_unsteered_answers_run_on_every_precision(quantized_dir, synthetic):
    item = synthetic[1]
    for to in PRECISIONS:
        vlm = runtime.load(quantized_dir("tiny-mha", to))
        for steering in (None, runtime.ScalingVis(1.5), runtime.ScalingVis(np.full((2, 4), 0.7, dtype=np.float32))):
            ans = vlm.answer(item.image_path, item.question, steering=steering, max_new_tokens=3)
            assert ans.timings.total > 0


def test_vision_embed_and_lm_head_options_answer(quantized_dir, bundle_dir, prompts, synthetic):
    folder = quantized_dir("tiny", "fp16", vision=True, embed=True, lm_head=True)
    record = json.loads((folder / "manifest.json").read_text())["quantization"]
    assert record["graphs"]["vision"]["fp16_initializers"] > 0 and record["graphs"]["embed"]["fp16_initializers"] == 1
    source, quantized = runtime.load(bundle_dir("tiny")), runtime.load(folder)
    _within(compare_logits(source, quantized, prompts, alpha_cases(source)), "fp16")
    int4 = runtime.load(quantized_dir("tiny", "int4", block_size=128, symmetric=True, accuracy_level=4,
                                      lm_head=True, vision=True))
    assert int4.answer(synthetic[0].image_path, synthetic[0].question, max_new_tokens=2).steering == "adaptvis"
