"""fp16 exports: tolerances from PyTorch fp16's own distance to the fp32 reference, recorded in the manifest."""
from __future__ import annotations

import json

import pytest
import torch
from torch.nn import functional as F

from export import export_llava
from export.half_run import fp16_run
from export.tolerance import EPS16, FP16, FP16_MEASURED, FP16_NOISE_FACTOR, tolerances

KEYS = ["vision", "embed", "decoder", "decoder.present_relative", "decoder.attention"]


def test_measured_fp16_limits_are_the_factor_times_the_noise_with_a_floor_of_one_ulp():
    noise = {"decoder": 1e-2, "embed": 0.0}
    t = tolerances(["decoder", "embed"], "fp16", noise, {"decoder": 12.0, "embed": 0.05}, {"decoder": 2, "embed": 1})
    assert t.limits["decoder"] == FP16_NOISE_FACTOR * 1e-2 and t.rules["decoder"] == FP16_MEASURED
    assert t.limits["embed"] == EPS16 * 0.05                     # an exact output: one fp16 ulp of its magnitude
    assert "4 x PyTorch fp16's distance from the fp32 reference, 0.01" in t.explain("decoder")
    wide = tolerances(["decoder"], "fp16", noise, {"decoder": 12.0}, {"decoder": 2}, atol=0.1)
    narrow = tolerances(["decoder"], "fp16", noise, {"decoder": 12.0}, {"decoder": 2}, atol=1e-3)
    assert wide.limits["decoder"] == 0.1 and wide.rules["decoder"] == "--atol 0.1"       # --atol widens
    assert narrow.limits["decoder"] == t.limits["decoder"]                               # and never narrows


def test_without_the_fp16_run_the_absolute_limits_remain():
    t = tolerances(KEYS, "fp16", {}, dict.fromkeys(KEYS, 10.0), dict.fromkeys(KEYS, 2))
    assert t.limits["decoder"] == 5e-2 and t.limits["decoder.attention"] == 1e-2 and set(t.rules.values()) == {FP16}


@pytest.mark.parametrize("rows, inputs, outputs", [(590, 512, 384), (1, 256, 1000)])
def test_the_fp16_run_rounds_each_product_once_as_pytorch_fp16_does(rows, inputs, outputs):
    gen = torch.Generator().manual_seed(0)
    linear = torch.nn.Linear(inputs, outputs).half()
    with torch.no_grad():
        linear.weight.copy_(torch.randn(outputs, inputs, generator=gen) * 0.05)
    x = torch.randn(rows, inputs, generator=gen).half()                              # [rows, in] fp16
    with torch.no_grad():
        native = linear(x)                                                            # PyTorch's own fp16 kernel
        with fp16_run(linear):
            got = linear(x)
        after = linear(x)
    once = F.linear(x.double(), linear.weight.double(), linear.bias.double()).half()  # exact sum, one rounding
    assert got.dtype == torch.float16
    # within an fp16 ulp of the exactly summed product (near zero: the float32 sum's own error, < 1e-5)
    ulp = EPS16 * once.float().abs() + 1e-5
    assert ((got.float() - once.float()).abs() <= ulp).all()
    assert ((got.float() - native.float()).abs() <= 4 * ulp).all()
    assert (got != native).float().mean() < 0.01
    assert torch.equal(after, native) and "forward" not in linear.__dict__            # put back


def test_an_fp16_checkpoint_exports_in_fp16_with_measured_tolerances(checkpoint_dir, tmp_path):
    lines = []
    manifest = export_llava(str(checkpoint_dir("tiny-fp16")), tmp_path / "bundle", log=lines.append)
    assert manifest.dtype == "fp16"                               # the checkpoint's own dtype, by default
    data = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert set(data["parity_rule"].values()) == {FP16_MEASURED} and data["parity_fp32_noise"] is None
    assert set(data["parity_fp16_noise"]) == set(KEYS)
    for key in KEYS:
        assert data["parity_tolerance"][key] >= FP16_NOISE_FACTOR * data["parity_fp16_noise"][key]
        assert data["parity"][key] <= data["parity_tolerance"][key] / 2, (key, data["parity"][key])
    assert data["parity_fp16_noise"]["decoder"] > 1e-3            # fp16 rounding, not fp32's
    assert any(line.startswith("this export needs about") for line in lines)
