"""bench.steering_cost: plain and both AdaptVis branches timed on one bundle of either family, ratios written."""
from __future__ import annotations

import json

import pytest

from bench import steering_cost


@pytest.mark.parametrize("family", ["llava", "qwen2_5_vl"])
def test_both_branches_are_timed_against_plain(family, bundle_dir, qwen_bundle_dir, tmp_path, capsys):
    bundle = bundle_dir("tiny") if family == "llava" else qwen_bundle_dir("tiny-qwen2.5-vl")
    out = tmp_path / "steering.json"
    assert steering_cost.main([str(bundle), "--repeat", "2", "--new-tokens", "3", "--size", "70x50",
                               "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    measured = result["measured"]
    assert measured["plain"]["alpha"] is None
    assert measured["adaptvis_low"]["alpha"] == 0.5 and measured["adaptvis_high"]["alpha"] == 1.5
    for m in steering_cost.METHODS:
        assert measured[m]["cold"]["n"] == measured[m]["warm"]["n"] == 2
    for key in ("adaptvis_low_over_plain", "adaptvis_high_over_plain"):
        assert result["ratios"][key]["cold"]["median"] > 0 and result["ratios"][key]["warm"]["n"] == 2
    assert "adaptvis_high" in capsys.readouterr().out


def test_a_bad_size_is_refused(tmp_path):
    with pytest.raises(SystemExit):
        steering_cost.parse([str(tmp_path), "--size", "wide"])
