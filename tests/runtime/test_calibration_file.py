"""calibration.json has one reader: what it gives, and a malformed file refused the same way everywhere."""
from __future__ import annotations

import json

import pytest

from runtime.calibration_file import read_calibration, write_calibration
from runtime.errors import BundleError
from runtime.steering import AdaptVis

GOOD = {"schema_version": 1,
        "adaptvis": {"alpha_low": 0.8, "alpha_high": 1.5, "threshold": 0.3, "round_confidence": True},
        "dataset": {"subset": "Controlled_Images_A"},
        "metrics": {"test": {"scalingvis": {"alpha": 1.2}}}}


def test_absent_is_none(tmp_path):
    assert read_calibration(tmp_path) is None


def test_every_recorded_field_is_read(tmp_path):
    write_calibration(tmp_path, GOOD)
    cal = read_calibration(tmp_path)
    a = cal.adaptvis
    assert isinstance(a, AdaptVis) and a.round_confidence and a.threshold == 0.3
    assert (float(a.low), float(a.high)) == pytest.approx((0.8, 1.5))
    assert cal.subset == "Controlled_Images_A" and cal.scalingvis_alpha == 1.2


def test_the_run_record_is_optional(tmp_path):
    write_calibration(tmp_path, {"adaptvis": GOOD["adaptvis"]})
    cal = read_calibration(tmp_path)
    assert cal.subset is None and cal.scalingvis_alpha is None


@pytest.mark.parametrize("edit,message", [
    (lambda d: d.pop("adaptvis"), "KeyError"),
    (lambda d: d["adaptvis"].update(alpha_high=1e38), "alpha_high must lie in"),
    (lambda d: d["adaptvis"].update(threshold="high"), "threshold"),
    (lambda d: d["metrics"]["test"]["scalingvis"].update(alpha=-1), "metrics.test.scalingvis.alpha"),
    (lambda d: d.update(metrics=[1]), "AttributeError"),
])
def test_a_malformed_file_is_a_bundle_error_naming_why(tmp_path, edit, message):
    doc = json.loads(json.dumps(GOOD))
    edit(doc)
    write_calibration(tmp_path, doc)
    with pytest.raises(BundleError, match=message):
        read_calibration(tmp_path)


def test_not_json_is_a_bundle_error(tmp_path):
    (tmp_path / "calibration.json").write_text("{")
    with pytest.raises(BundleError, match="malformed"):
        read_calibration(tmp_path)
