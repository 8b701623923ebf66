"""Which engines a machine may load, from hand-written engines.json files (no TensorRT needed).

The refusals are what runtime.load(providers=["tensorrt", ...]) raises, as BundleError, before any
engine is opened: these tests call the same ``select_engines`` with an explicit target.
"""
from __future__ import annotations

import json
import warnings

import pytest

import runtime
from runtime.engine_layout import (EngineError, EngineTarget, engines_root, no_engines_message, read_record, rebuild_command,
                            select_engines)
from graphs.manifest import MANIFEST_FILE
from runtime.bundle import sha256_file
from runtime.errors import BundleError, ProviderError
from runtime.providers import tensorrt_engines
from tests.conftest import random_image
from tests.engines.helpers import DESKTOP, ORIN, copy_bundle, fake_build


def _sha(bundle):
    return sha256_file(bundle / MANIFEST_FILE)


def test_folder_is_named_for_tensorrt_and_compute_capability():
    assert ORIN.folder == "trt-10.3.0-sm87"
    assert EngineTarget("10.13.0", "11.0").folder == "trt-10.13.0-sm110"
    assert ORIN.describe() == "TensorRT 10.3.0 on sm87 (Orin)"


def test_matching_build_is_selected(bundle_dir, tmp_path):
    bundle = copy_bundle(bundle_dir("tiny"), tmp_path)
    folder = fake_build(bundle, ORIN)
    chosen = select_engines(bundle, ORIN, _sha(bundle))
    assert chosen.folder == folder and chosen.max_prompt == 40 and chosen.max_context == 48
    assert chosen.context_model("decoder") == folder / "decoder_ctx.onnx"
    assert chosen.target == ORIN


def test_engines_for_another_tensorrt_or_gpu_are_refused_naming_both_and_the_rebuild(bundle_dir, tmp_path):
    bundle = copy_bundle(bundle_dir("tiny"), tmp_path)
    fake_build(bundle, ORIN)
    with pytest.raises(EngineError) as refused:
        select_engines(bundle, DESKTOP, _sha(bundle))
    message = str(refused.value)
    assert "TensorRT 10.3.0 on sm87 (Orin)" in message                      # what the bundle has
    assert "TensorRT 10.7.0 on sm89 (NVIDIA GeForce RTX 4090)" in message   # what this machine runs
    assert f"just engines {bundle} --precision fp32 --max-prompt 40 --max-context 48" in message
    other_gpu = EngineTarget("10.3.0", "8.6", "RTX 3060")                          # same TensorRT, another GPU
    with pytest.raises(EngineError, match="sm86"):
        select_engines(bundle, other_gpu, _sha(bundle))


def test_a_copied_folder_whose_record_names_another_target_is_refused(bundle_dir, tmp_path):
    bundle = copy_bundle(bundle_dir("tiny"), tmp_path)
    folder = fake_build(bundle, ORIN)
    folder.rename(engines_root(bundle) / DESKTOP.folder)       # an Orin build renamed to look like a desktop one
    with pytest.raises(EngineError, match="built for TensorRT 10.3.0 on sm87.*not for this machine's TensorRT 10.7.0"):
        select_engines(bundle, DESKTOP, _sha(bundle))


def test_engines_from_an_earlier_export_are_refused(bundle_dir, tmp_path):
    bundle = copy_bundle(bundle_dir("tiny"), tmp_path)
    fake_build(bundle, ORIN, bundle_manifest_sha256="0" * 64)
    with pytest.raises(EngineError, match="earlier export"):
        select_engines(bundle, ORIN, _sha(bundle))


def test_missing_engine_file_and_malformed_record_are_refused(bundle_dir, tmp_path):
    bundle = copy_bundle(bundle_dir("tiny"), tmp_path)
    folder = fake_build(bundle, ORIN)
    (folder / "decoder.engine").unlink()
    with pytest.raises(EngineError, match="missing decoder.engine"):
        select_engines(bundle, ORIN, _sha(bundle))
    (folder / "engines.json").write_text(json.dumps({"schema_version": 1, "tensorrt": "10.3.0"}))
    with pytest.raises(EngineError, match="malformed"):
        read_record(folder)
    (folder / "engines.json").write_text("{not json")
    with pytest.raises(EngineError, match="cannot be read"):
        select_engines(bundle, ORIN, _sha(bundle))


def test_no_engines_message(bundle_dir, tmp_path):
    bundle = copy_bundle(bundle_dir("tiny"), tmp_path)
    assert select_engines(bundle, ORIN, _sha(bundle)) is None
    message = no_engines_message(bundle, ORIN)
    assert "no prebuilt TensorRT engines for TensorRT 10.3.0 on sm87 (Orin)" in message
    assert f"just engines {bundle}" in message and "trt_engines" in message
    assert rebuild_command(bundle) == f"just engines {bundle}"


def test_runtime_without_gpu_or_tensorrt(bundle_dir, tmp_path):
    """On this machine (no libcuda / libnvinfer, or no GPU): the runtime's own check, as runtime.load calls it."""
    from runtime.engine_target import TargetUnavailable, local_target
    try:
        local_target()
        pytest.skip("this machine has TensorRT and a GPU: see test_engine_parity.py")
    except TargetUnavailable:
        pass
    bundle = copy_bundle(bundle_dir("tiny"), tmp_path)
    trt_first = ["TensorrtExecutionProvider", "CUDAExecutionProvider"]
    with pytest.warns(RuntimeWarning, match="no prebuilt TensorRT engines"):
        assert tensorrt_engines(bundle, bundle / MANIFEST_FILE, trt_first) is None
    fake_build(bundle, ORIN)
    with pytest.raises(ProviderError, match="has prebuilt TensorRT engines, but this machine's TensorRT or GPU"):
        tensorrt_engines(bundle, bundle / MANIFEST_FILE, trt_first)


def test_engines_are_only_looked_at_when_tensorrt_comes_first(bundle_dir, tmp_path):
    bundle = copy_bundle(bundle_dir("tiny"), tmp_path)
    fake_build(bundle, ORIN)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tensorrt_engines(bundle, bundle / MANIFEST_FILE, ["CPUExecutionProvider"]) is None
        vlm = runtime.load(bundle, providers=["cpu"])          # the engines folder does not disturb a CPU load
    assert vlm.sessions.engines is None and vlm.sessions.max_context == vlm.manifest.decoder.max_position_embeddings
    assert len(vlm.answer(random_image(0), "Where is the mug?", max_new_tokens=2).token_ids) >= 1


def test_bundle_error_reaches_the_caller_as_a_runtime_input_error(bundle_dir, tmp_path, monkeypatch):
    """A refusal surfaces as runtime.errors.BundleError (a RuntimeInputError) from the runtime's check.
    ``local_target`` is replaced by a fixed answer: the TensorRT path itself is not exercised here."""
    import runtime.engine_target
    bundle = copy_bundle(bundle_dir("tiny"), tmp_path)
    fake_build(bundle, ORIN)
    monkeypatch.setattr(runtime.engine_target, "local_target", lambda device=0: DESKTOP)
    with pytest.raises(BundleError, match="TensorRT 10.3.0 on sm87.*TensorRT 10.7.0 on sm89") as refused:
        tensorrt_engines(bundle, bundle / MANIFEST_FILE, ["TensorrtExecutionProvider", "CUDAExecutionProvider"])
    assert isinstance(refused.value, runtime.errors.RuntimeInputError)
    assert f"just engines {bundle}" in str(refused.value)
