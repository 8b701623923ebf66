"""calibration.json: one reader (at open), one writer (signed into the digest table), a malformed file refused alike."""
from __future__ import annotations

import json
import shutil

import pytest

import runtime
from runtime import bundle_write
from runtime.bundle import Bundle
from runtime.bundle_write import write_calibration
from runtime.errors import BundleError
from runtime.steering import PAPER_DEFAULT, AdaptVis
from tests.manifest_edit import plant_file

GOOD = {"schema_version": 1,
        "adaptvis": {"alpha_low": 0.8, "alpha_high": 1.5, "threshold": 0.3, "round_confidence": True},
        "dataset": {"subset": "Controlled_Images_A"},
        "metrics": {"test": {"scalingvis": {"alpha": 1.2}}}}


@pytest.fixture
def copy(bundle_dir, tmp_path):
    return shutil.copytree(bundle_dir("tiny"), tmp_path / "bundle")


def _state(folder):
    return sorted((p.name, p.read_bytes()) for p in folder.parent.rglob("*") if p.is_file())


def test_absent_is_none_and_the_paper_steers(copy):
    assert Bundle.open(copy).calibration is None
    assert runtime.load(copy).default_steering == PAPER_DEFAULT


def test_every_recorded_field_is_read_and_the_file_is_signed(copy):
    written = write_calibration(copy, GOOD)
    assert "calibration.json" in written.manifest.sha256 and written.verified
    cal = Bundle.open(copy).calibration              # checks on: every digest, the calibration's too
    a = cal.adaptvis
    assert isinstance(a, AdaptVis) and a.round_confidence and a.threshold == 0.3
    assert (float(a.low), float(a.high)) == pytest.approx((0.8, 1.5))
    assert cal.subset == "Controlled_Images_A" and cal.scalingvis_alpha == 1.2
    steers = runtime.load(copy).default_steering
    assert (float(steers.low), float(steers.high), steers.threshold) == (float(a.low), float(a.high), 0.3)
    assert not [p for p in copy.parent.iterdir() if p.name.startswith(".")]      # no staging folder left


def test_the_run_record_is_optional(copy):
    write_calibration(copy, {"adaptvis": GOOD["adaptvis"]})
    cal = Bundle.open(copy).calibration
    assert cal.subset is None and cal.scalingvis_alpha is None


def test_a_changed_calibration_is_caught_by_its_digest(copy):
    write_calibration(copy, GOOD)
    doc = json.loads((copy / "calibration.json").read_text())
    doc["adaptvis"]["alpha_high"] = 2.0
    (copy / "calibration.json").write_text(json.dumps(doc))
    with pytest.raises(BundleError, match="calibration.json does not match its checksum"):
        runtime.load(copy)


BAD = [
    (lambda d: d.pop("adaptvis"), "KeyError"),
    (lambda d: d["adaptvis"].update(alpha_high=1e38), "alpha_high must lie in"),
    (lambda d: d["adaptvis"].update(threshold="high"), "threshold"),
    (lambda d: d["metrics"]["test"]["scalingvis"].update(alpha=-1), "metrics.test.scalingvis.alpha"),
    (lambda d: d.update(metrics=[1]), "AttributeError"),
]


@pytest.mark.parametrize("edit,message", BAD)
def test_a_malformed_document_is_never_written(copy, edit, message):
    doc = json.loads(json.dumps(GOOD))
    edit(doc)
    before = _state(copy)
    with pytest.raises(BundleError, match=message):
        write_calibration(copy, doc)
    assert _state(copy) == before


@pytest.mark.parametrize("edit,message", BAD)
def test_a_malformed_file_resealed_by_hand_is_refused_at_open(copy, edit, message):
    doc = json.loads(json.dumps(GOOD))
    edit(doc)
    plant_file(copy, "calibration.json", json.dumps(doc).encode())
    with pytest.raises(BundleError, match=message):
        runtime.load(copy)


def test_not_json_is_a_bundle_error(copy):
    plant_file(copy, "calibration.json", b"{")
    with pytest.raises(BundleError, match="malformed"):
        Bundle.open(copy)


def test_an_unsigned_calibration_of_an_older_bundle_is_refused_until_deleted(copy):
    """Calibrated before calibration.json joined the digest table: not trusted to steer (checks off: read as is)."""
    (copy / "calibration.json").write_text(json.dumps(GOOD))
    with pytest.raises(BundleError, match="not in the manifest's digest table.*delete it and run just calibrate"):
        runtime.load(copy)
    assert runtime.load(copy, verify_checksums=False).default_steering.threshold == 0.3
    (copy / "calibration.json").unlink()
    write_calibration(copy, GOOD)                     # calibrating again signs it
    assert runtime.load(copy).default_steering.threshold == 0.3


def test_an_unverified_bundle_is_never_resigned(copy):
    (copy / "tokenizer.json").write_bytes((copy / "tokenizer.json").read_bytes() + b" ")
    before = _state(copy)
    with pytest.raises(BundleError, match="checksum"):
        write_calibration(copy, GOOD)
    unverified = Bundle.open(copy, verify_checksums=False)
    with pytest.raises(BundleError, match="not re-signed"):
        write_calibration(unverified, GOOD)
    assert _state(copy) == before


def test_an_interrupted_write_leaves_the_bundle_as_it_was(copy, monkeypatch):
    write_calibration(copy, GOOD)
    before = _state(copy)

    def torn(folder, manifest, known=None):
        (folder / "manifest.json").write_text('{"schema_version": 1, "gra')
        raise KeyboardInterrupt
    monkeypatch.setattr(bundle_write, "sign", torn)
    with pytest.raises(KeyboardInterrupt):
        write_calibration(copy, {"adaptvis": GOOD["adaptvis"]})
    assert _state(copy) == before
    assert Bundle.open(copy).calibration.subset == "Controlled_Images_A"


def test_a_calibration_that_leads_outside_the_folder_is_refused(copy, tmp_path):
    outside = tmp_path / "elsewhere.json"
    outside.write_text(json.dumps(GOOD))
    (copy / "calibration.json").symlink_to(outside)
    for verify in (True, False):
        with pytest.raises(BundleError, match="leads outside the bundle folder"):
            runtime.load(copy, verify_checksums=verify)
