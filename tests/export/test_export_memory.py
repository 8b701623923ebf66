"""The export's memory tools: the per-phase log, and the pages and heap given back between phases."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from export import export_llava
from export.memory_log import MemoryLog, status_bytes
from export.release import drop_unused_pages, trim_heap

ROOT = Path(__file__).resolve().parents[2]
linux_only = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc/self")


@linux_only
def test_memory_log_records_every_phase_of_an_export(checkpoint_dir, tmp_path):
    log = tmp_path / "memory.json"
    lines = []
    export_llava(str(checkpoint_dir("tiny")), tmp_path / "bundle", dtype="fp16", memory_log=log,
                 parity_layers=1, log=lines.append)
    summary = json.loads(log.read_text())
    phases = summary["phases"]
    for part in ("vision", "embed", "decoder"):
        assert {f"trace {part}", f"weights {part}", f"reference {part}"} <= set(phases)
    assert {"load", "parity vision", "parity embed", "parity decoder layers 0-0", "parity decoder layers 1-1",
            "manifest"} <= set(phases)
    assert all(p["peak_gb"] > 0 and p["peak_gb"] >= p["anon_gb"] for p in phases.values())
    assert summary["peak_gb"] == max(p["peak_gb"] for p in phases.values())
    assert summary["checkpoint_gb"] > 0 and summary["peak_over_checkpoint"] > 0
    assert any(line.startswith("memory: trace decoder: peak RSS") for line in lines)


@linux_only
def test_a_phase_peak_is_the_phases_own(tmp_path):
    memory = MemoryLog(tmp_path / "m.json")
    with memory.phase("big"):
        block = bytearray(300 * 1024 * 1024)          # touched: resident
        del block
    with memory.phase("small"):
        pass
    phases = memory.write()["phases"]
    assert phases["big"]["peak_gb"] - phases["small"]["peak_gb"] > 0.25


def test_cli_takes_the_memory_log_and_parity_layers_options():
    out = subprocess.run([sys.executable, "-m", "export", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert "--memory-log" in out.stdout and "--parity-layers" in out.stdout


@linux_only
def test_pages_of_a_dropped_part_leave_the_resident_set(checkpoint_dir, tmp_path):
    """An fp16 checkpoint loaded in fp16 maps its file: once the vision tower is dropped, its pages go;
    the decoder's weights, still in use, read the same afterwards."""
    from transformers import LlavaForConditionalGeneration

    half = tmp_path / "half"
    LlavaForConditionalGeneration.from_pretrained(checkpoint_dir("tiny"), dtype=torch.float16).save_pretrained(half)
    model = LlavaForConditionalGeneration.from_pretrained(half, dtype=torch.float16, low_cpu_mem_usage=True).eval()
    vision_bytes = sum(p.numel() * p.element_size() for p in model.model.vision_tower.parameters())
    kept = {name: p.detach().clone() for name, p in model.named_parameters() if "vision_tower" not in name}
    model.model.vision_tower = None
    dropped = drop_unused_pages(model, sorted(half.glob("*.safetensors")))
    assert 0 < dropped <= vision_bytes + 2 * 4096 * len(kept)
    for name, p in model.named_parameters():
        assert torch.equal(p, kept[name]), name
    assert drop_unused_pages(model, [tmp_path / "not-mapped.safetensors"]) == 0
    assert trim_heap() in (True, False) and status_bytes().get("VmRSS", 1) > 0
