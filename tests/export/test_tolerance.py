"""The tolerance rule: measured against float64, by depth where that run does not fit, --atol only widens."""
from __future__ import annotations

import pytest
import torch

from export.errors import ParityError
from export.parity import compare_with_onnx, reference_cases
from export.tolerance import BY_DEPTH, EPS32, FP16, MEASURED, NOISE_FACTOR, tolerances
from export.upcast import float64_run, fp64_fits
from export.wrappers import SteeredDecoder, TokenEmbedding, VisionEncoder

KEYS = ["vision", "embed", "decoder", "decoder.present_relative", "decoder.attention"]


def _cases(checkpoint, measure_noise=True):
    from transformers import LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(checkpoint, attn_implementation="eager").eval()
    wrappers = {"vision": VisionEncoder(model), "embed": TokenEmbedding(model), "decoder": SteeredDecoder(model)}
    return reference_cases(wrappers, model.config, "fp32", measure_noise=measure_noise)


def test_measured_limits_follow_the_noise_with_a_floor_of_ulps():
    noise = {"decoder": 1e-5, "embed": 0.0}
    t = tolerances(["decoder", "embed"], "fp32", noise, {"decoder": 30.0, "embed": 0.05}, {"decoder": 30, "embed": 1})
    assert t.limits["decoder"] == NOISE_FACTOR * 1e-5 and t.rules["decoder"] == MEASURED
    assert 0 < t.limits["embed"] < 1e-7                # an exact output: a few ulps of its magnitude
    assert "8 x PyTorch fp32's distance from float64, 1e-05" in t.explain("decoder")


def test_without_a_float64_run_limits_grow_with_magnitude_and_depth():
    shallow = tolerances(["decoder"], "fp32", {}, {"decoder": 10.0}, {"decoder": 2})
    deep = tolerances(["decoder"], "fp32", {}, {"decoder": 10.0}, {"decoder": 32})
    large = tolerances(["decoder"], "fp32", {}, {"decoder": 40.0}, {"decoder": 2})
    assert shallow.rules["decoder"] == BY_DEPTH
    assert deep.limits["decoder"] == 16 * shallow.limits["decoder"] == pytest.approx(16 * EPS32 * 10 * 32)
    assert large.limits["decoder"] == 4 * shallow.limits["decoder"]


def test_atol_widens_and_never_narrows():
    auto = tolerances(KEYS, "fp32", dict.fromkeys(KEYS, 1e-6), dict.fromkeys(KEYS, 1.0), dict.fromkeys(KEYS, 2))
    with_atol = tolerances(KEYS, "fp32", dict.fromkeys(KEYS, 1e-6), dict.fromkeys(KEYS, 1.0), dict.fromkeys(KEYS, 2),
                           atol=2e-5)
    assert all(with_atol.limits[k] == max(auto.limits[k], 2e-5) for k in KEYS)
    assert with_atol.rules["decoder.attention"] == "--atol 2e-05"        # the attention limit too, not scaled down
    tight = tolerances(KEYS, "fp32", dict.fromkeys(KEYS, 1e-6), dict.fromkeys(KEYS, 1.0), dict.fromkeys(KEYS, 2),
                       atol=1e-9)
    assert tight.limits == auto.limits


def test_fp16_keeps_its_absolute_limits():
    t = tolerances(KEYS, "fp16", {}, dict.fromkeys(KEYS, 10.0), dict.fromkeys(KEYS, 2))
    assert t.limits["decoder"] == 5e-2 and t.limits["decoder.attention"] == 1e-2 and set(t.rules.values()) == {FP16}


def test_the_float64_run_is_float64_throughout_and_puts_the_weights_back(checkpoint_dir):
    from transformers import LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(checkpoint_dir("tiny"), attn_implementation="eager").eval()
    decoder = SteeredDecoder(model)
    storages = {n: p.data_ptr() for n, p in decoder.named_parameters()}
    layers, heads = model.config.text_config.num_hidden_layers, model.config.text_config.num_attention_heads
    kv, dim = model.config.text_config.num_key_value_heads, model.config.text_config.hidden_size // heads
    args = (torch.ones(1, 5, dtype=torch.int64), torch.arange(5)[None],
            [torch.zeros(1, kv, 0, dim, dtype=torch.float64)] * (2 * layers), torch.full((1, layers, heads), 2.0,
                                                                                         dtype=torch.float64),
            torch.tensor([[False, True, True, False, False]]))
    embeds = torch.randn(1, 5, model.config.text_config.hidden_size, dtype=torch.float64)
    with torch.no_grad(), float64_run(decoder):
        out = decoder(embeds, *args)
    assert all(t.dtype == torch.float64 for t in out)                   # logits, K/V, attention outputs
    assert {n: p.data_ptr() for n, p in decoder.named_parameters()} == storages
    assert all(p.dtype == torch.float32 for p in decoder.parameters())
    assert fp64_fits(decoder)


def test_the_manifest_records_noise_tolerance_and_rule(bundle_dir):
    import json

    manifest = json.loads((bundle_dir("tiny") / "manifest.json").read_text())
    assert set(manifest["parity_rule"].values()) == {MEASURED}
    for key, noise in manifest["parity_fp32_noise"].items():
        assert manifest["parity_tolerance"][key] >= NOISE_FACTOR * noise


def test_by_depth_a_correct_export_passes_and_a_defect_fails(bundle_dir, checkpoint_dir):
    """Where the float64 run does not fit: the magnitude-and-depth rule, on the same bundle."""
    cases = _cases(checkpoint_dir("tiny"), measure_noise=False)
    assert cases.noise == {"embed": 0.0}
    result = compare_with_onnx(bundle_dir("tiny"), cases, "fp32")
    assert result.tolerances.rules["decoder"] == BY_DEPTH
    assert all(result.worst[k] <= result.tolerances.limits[k] / 2 for k in KEYS if k != "embed"), result
    step = cases.graphs["decoder"][0]
    step.expected[0] = step.expected[0] * 1.001                         # logits 0.1 % off: a wrong graph
    with pytest.raises(ParityError, match=r"'logits' differs .*eps32 x magnitude x depth"):
        compare_with_onnx(bundle_dir("tiny"), cases, "fp32")
