"""An export's default dtype is the checkpoint's own; its peak memory is said first and refused where it cannot fit."""
from __future__ import annotations

import json
import shutil

import pytest

from export import export_llava
from export.memory_need import (InsufficientMemoryError, check_memory, checkpoint_dtype, default_dtype, expected_peak,
                                parameter_count)


def _with_config(src, dst, **fields):
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    config.pop("dtype", None)
    config.update(fields)
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def test_the_default_dtype_is_the_checkpoints_own(checkpoint_dir, tmp_path):
    assert default_dtype(checkpoint_dir("tiny")) == "fp32"
    assert default_dtype(checkpoint_dir("tiny-fp16")) == "fp16"
    hub_style = _with_config(checkpoint_dir("tiny"), tmp_path / "a", torch_dtype="float16")   # llava-hf's config
    assert default_dtype(hub_style) == "fp16"
    bf16 = _with_config(checkpoint_dir("tiny"), tmp_path / "b", torch_dtype="bfloat16")
    assert checkpoint_dtype(bf16) is None and default_dtype(bf16) == "fp32"


def test_the_expected_peak_counts_the_checkpoints_parameters(checkpoint_dir):
    from transformers import LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(checkpoint_dir("tiny"))
    assert parameter_count(checkpoint_dir("tiny")) == sum(p.numel() for p in model.parameters())
    fp16, fp32 = (expected_peak(checkpoint_dir("tiny"), d, 4) for d in ("fp16", "fp32"))
    assert fp32.weights_bytes == 2 * fp16.weights_bytes == 4 * parameter_count(checkpoint_dir("tiny"))
    caches = [expected_peak(checkpoint_dir("tiny"), "fp16", n).cache_bytes for n in (1, 2, 4)]
    assert 0 < caches[1] - caches[0] == (caches[2] - caches[1]) / 2          # a prompt's cache per parity case


def test_too_little_memory_is_refused_naming_the_need_and_the_fp16_alternative(checkpoint_dir):
    need = expected_peak(checkpoint_dir("tiny"), "fp32", 4).peak_bytes
    with pytest.raises(InsufficientMemoryError, match=r"needs about .* GB at its peak in fp32.*available \(MemAvailable\)"
                                                      r".*--dtype fp16\) needs about"):
        check_memory(checkpoint_dir("tiny"), "fp32", 4, available=need - 1)
    assert check_memory(checkpoint_dir("tiny"), "fp32", 4, available=need).peak_bytes == need


def test_an_export_refuses_at_once_and_leaves_nothing(checkpoint_dir, tmp_path, monkeypatch):
    import export.memory_need as memory_need

    monkeypatch.setattr(memory_need, "available_bytes", lambda: 10**8)       # a machine with 0.1 GB free
    with pytest.raises(InsufficientMemoryError, match="0.1 GB available"):
        export_llava(str(checkpoint_dir("tiny")), tmp_path / "out", log=lambda m: None)
    assert list(tmp_path.iterdir()) == []
