"""`just engines` / `python -m engines`: requests refused before TensorRT is needed, and what a
machine without TensorRT says."""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engines.builder import build_mode, graph_precision
from runtime.engine_layout import EngineError
from graphs.manifest import Manifest

ROOT = Path(__file__).resolve().parents[2]


def _engines(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "engines", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def _refused(out, message):
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr


def test_missing_bundle(tmp_path):
    _refused(_engines(tmp_path / "nothing"), "does not exist")


@pytest.mark.parametrize("args, message", [
    (["--precision", "int8"], "invalid choice: 'int8'"),
    (["--max-prompt", "0"], "--max-prompt must be more than the image's"),
    (["--max-prompt", "60", "--max-context", "48"], "at most --max-context (48)"),
    (["--max-context", "1000000"], "--max-context must be between 2 and the model's context"),
    (["--max-context", "many"], "invalid int value"),
    (["--workspace", "0"], "--workspace must be a positive number of GB"),
    (["--flash"], "unrecognized arguments: --flash"),
])
def test_bad_arguments_exit_2_with_one_reason(bundle_dir, args, message):
    _refused(_engines(bundle_dir("tiny"), *args), message)


def test_a_damaged_bundle_is_refused(bundle_dir, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(bundle_dir("tiny"), bundle)
    with open(bundle / "embed.onnx", "ab") as f:
        f.write(b"x")
    _refused(_engines(bundle), "does not match its checksum")


def test_precision_against_the_graphs(bundle_dir):
    m = Manifest.read(bundle_dir("tiny"))
    assert graph_precision(m) == "fp32"
    assert build_mode("fp32", None) == ("fp32", True, False)          # strongly typed, precision from the graph
    assert build_mode("fp16", None) == ("fp16", True, False)
    assert build_mode("fp32", "fp16") == ("fp16", False, True)        # weakly typed + FP16 flag
    with pytest.raises(EngineError, match="graphs are fp16"):
        build_mode("fp16", "fp32")
    assert graph_precision(dataclasses.replace(m, dtype="fp16")) == "fp16"
    assert graph_precision(dataclasses.replace(m, quantization={"precision": "fp16"})) == "fp16"
    with pytest.raises(EngineError, match="int4 weight-only .*MatMulNBits"):
        graph_precision(dataclasses.replace(m, quantization={"precision": "int4"}))


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_without_tensorrt_a_valid_request_says_how_to_install_it(bundle_dir, tmp_path):
    out = _engines(bundle_dir("tiny"), "--max-context", "48")
    assert out.returncode == 1, out.stderr
    assert "TensorRT Python bindings are not installed" in out.stderr and "--system-site-packages" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (bundle_dir("tiny") / "engines").exists()              # nothing half-written into the bundle


def test_just_recipe_passes_the_arguments(bundle_dir):
    just = shutil.which("just") or shutil.which("just", path=str(Path(sys.executable).parent))
    if just is None:
        pytest.skip("`just` (rust-just, a dev dependency) is not installed")
    out = subprocess.run([just, "--justfile", str(ROOT / "justfile"), "--working-directory", str(ROOT), "engines",
                          str(bundle_dir("tiny")), "--max-prompt", "60", "--max-context", "48"],
                         env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=120)
    _refused(out, "at most --max-context (48)")


def test_a_qwen_bundle_is_refused_and_pointed_at_the_graph_check(qwen_bundle_dir):
    bundle = qwen_bundle_dir("tiny-qwen2.5-vl")
    before = sorted(p.name for p in bundle.iterdir())
    _refused(_engines(bundle), "TensorRT engines are prebuilt for LLaVA bundles only")
    assert sorted(p.name for p in bundle.iterdir()) == before
