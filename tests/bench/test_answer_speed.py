"""bench.answer_speed: every bundle answers every drawn scene, and agreement is against the first bundle."""
from __future__ import annotations

import json

from bench import answer_speed


def test_two_bundles_answer_the_same_scenes(bundle_dir, tmp_path, capsys):
    out = tmp_path / "speed.json"
    tiny = bundle_dir("tiny")
    assert answer_speed.main([str(tiny), str(tiny), "--items", "4", "--rounds", "2", "--workdir",
                              str(tmp_path / "scenes"), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["items"] == 4 and result["rounds"] == 2 and len(result["bundles"]) == 2
    for row in result["bundles"]:
        assert row["answers"] == 8 and row["answer_ms_min"] <= row["answer_ms_median"] <= row["answer_ms_max"]
        assert row["same_text_as_first"] == row["same_alpha_as_first"] == 1.0     # the same bundle twice
        assert 0.0 <= row["accuracy"] <= 1.0
    assert "| bundle | answer ms" in capsys.readouterr().out
