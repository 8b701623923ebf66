"""Bad export requests fail clearly and leave nothing that looks like a bundle."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from export import export_llava
from export.errors import BundleExistsError, ExportError, ParityError, SourceNotFoundError, UnsupportedModelError

ROOT = Path(__file__).resolve().parents[2]
quiet = dict(log=lambda m: None)


def test_unsupported_architecture_names_what_is_supported(tmp_path):
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(UnsupportedModelError, match="supported: llava"):
        export_llava(str(tmp_path / "bert"), tmp_path / "out", **quiet)
    assert not (tmp_path / "out").exists()


def test_missing_local_folder(tmp_path):
    with pytest.raises(SourceNotFoundError, match="neither an existing folder"):
        export_llava(str(tmp_path / "nope"), tmp_path / "out", **quiet)


def test_hub_unreachable_suggests_a_local_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(SourceNotFoundError, match="local folder"):
        export_llava("llava", tmp_path / "out", **quiet)


def test_existing_bundle_is_refused_without_force(bundle_dir, checkpoint_dir, tmp_path):
    out = tmp_path / "b"
    shutil.copytree(bundle_dir("tiny"), out)
    before = (out / "manifest.json").read_text()
    with pytest.raises(BundleExistsError, match="--force"):
        export_llava(str(checkpoint_dir("tiny-mha")), out, **quiet)
    assert (out / "manifest.json").read_text() == before
    export_llava(str(checkpoint_dir("tiny-mha")), out, force=True, **quiet)
    assert json.loads((out / "manifest.json").read_text())["source_model"].endswith(str(checkpoint_dir("tiny-mha").name))


def test_bad_options(checkpoint_dir, tmp_path):
    with pytest.raises(ExportError, match="opset"):
        export_llava(str(checkpoint_dir("tiny")), tmp_path / "o", opset=23, **quiet)
    with pytest.raises(ExportError, match="dtype"):
        export_llava(str(checkpoint_dir("tiny")), tmp_path / "o", dtype="int3", **quiet)
    for atol in (0.0, -1e-4, 1.0, float("nan")):
        with pytest.raises(ExportError, match="atol"):
            export_llava(str(checkpoint_dir("tiny")), tmp_path / "o", atol=atol, **quiet)
    assert not (tmp_path / "o").exists()


def test_failure_mid_export_leaves_no_bundle(checkpoint_dir, tmp_path, monkeypatch):
    import export.parity

    def fail(*a, **k):
        raise ParityError("decoder graph output 'logits' differs (simulated)")
    monkeypatch.setattr(export.parity, "compare_with_onnx", fail)
    with pytest.raises(ParityError):
        export_llava(str(checkpoint_dir("tiny")), tmp_path / "out", **quiet)
    assert list(tmp_path.iterdir()) == []     # neither the bundle nor the partial folder


def test_cli_exports_and_reports_errors(checkpoint_dir, tmp_path):
    ok = subprocess.run([sys.executable, "-m", "export", str(checkpoint_dir("tiny")), "--out", str(tmp_path / "b")],
                        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "b" / "manifest.json").is_file()
    again = subprocess.run([sys.executable, "-m", "export", str(checkpoint_dir("tiny")), "--out", str(tmp_path / "b")],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "already holds a bundle" in again.stderr and "Traceback" not in again.stderr


def test_settings_are_one_checked_object(tmp_path):
    from export import ExportSettings, export_llava
    from export.errors import ExportError

    with pytest.raises(ExportError, match="unknown export option.*dtpye"):
        export_llava("unused", tmp_path / "b", dtpye="fp16")
    with pytest.raises(ExportError, match="opset must be within"):
        export_llava("unused", tmp_path / "b", ExportSettings(), opset=99)
    assert ExportSettings().with_options(dtype="fp16").dtype == "fp16"
    assert not (tmp_path / "b").exists()
