"""python -m export on a Qwen checkpoint: the LLaVA-only options refused (exit 2, nothing written), the Qwen aliases.

No weights are needed: the family is read from config.json (or from the alias) before anything loads."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from export import source
from export.__main__ import main
from export.errors import SourceNotFoundError, UnsupportedOptionError
from export.route import export_model

ROOT = Path(__file__).resolve().parents[2]
LLAVA_ONLY = (["--pad-to-square"], ["--parity-cases", "all"], ["--memory-log", "memory.json"],
              ["--parity-layers", "2"], ["--no-memory-check"], ["--exporter-writes-weights"], ["--dtype", "fp16"])


@pytest.fixture
def qwen_folder(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps({"model_type": "qwen2_5_vl"}))
    return ckpt


@pytest.mark.parametrize("flags", LLAVA_ONLY, ids=lambda f: f[0])
def test_a_llava_only_option_is_refused_for_a_qwen_checkpoint_naming_it_and_the_family(flags, qwen_folder, tmp_path,
                                                                                        capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([str(qwen_folder), "--out", str(tmp_path / "out"), *flags]) == 2
    err = capsys.readouterr().err
    assert flags[0] in err and "Qwen2.5-VL" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]        # no bundle, no partial, no memory log


def test_several_are_named_together_and_the_api_raises_the_typed_error(qwen_folder, tmp_path):
    with pytest.raises(UnsupportedOptionError, match="--pad-to-square, --memory-log are LLaVA options"):
        export_model(str(qwen_folder), tmp_path / "out", pad_to_square=True, memory_log=tmp_path / "m.json")
    with pytest.raises(UnsupportedOptionError, match="unknown export option"):
        export_model(str(qwen_folder), tmp_path / "out", colour="blue")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_the_qwen_aliases_name_their_hub_ids(monkeypatch):
    asked = []

    def fake_download(repo_id, revision):
        asked.append((repo_id, revision))
        raise SourceNotFoundError("offline")

    monkeypatch.setattr(source, "_download", fake_download)
    for alias, repo in (("qwen2.5-vl", "Qwen/Qwen2.5-VL-3B-Instruct"), ("qwen3-vl", "Qwen/Qwen3-VL-2B-Instruct")):
        with pytest.raises(SourceNotFoundError):
            source.locate(alias)
        assert asked[-1] == (repo, None)
    assert source.ALIAS_MODEL_TYPES == {"llava": "llava", "qwen2.5-vl": "qwen2_5_vl", "qwen3-vl": "qwen3_vl"}


def test_an_alias_of_a_qwen_model_refuses_llava_options_before_any_download(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(source, "_download", lambda *a: pytest.fail("downloaded before refusing"))
    assert main(["qwen3-vl", "--out", str(tmp_path / "out"), "--no-memory-check"]) == 2
    assert "--no-memory-check" in capsys.readouterr().err and list(tmp_path.iterdir()) == []


def test_an_alias_offline_without_a_cache_fails_clearly_and_writes_nothing(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(ROOT)}
    env.pop("HF_HUB_CACHE", None)
    run = subprocess.run([sys.executable, "-m", "export", "qwen2.5-vl", "--out", str(tmp_path / "out")], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr
    assert "Qwen/Qwen2.5-VL-3B-Instruct" in run.stderr and "not in the local cache" in run.stderr, run.stderr
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
