"""Which exporter a checkpoint goes to: its family (``runtime.families.detect_family``, by ``model_type``).

    config.json model_type --detect_family--> llava       -> export.bundle.export_llava
                                              qwen2_5_vl  -> export.qwen_vl.bundle.export_qwen
                                              qwen3_vl    -> export.qwen_vl.bundle.export_qwen
                                              other       -> UnsupportedModelError naming the families
"""
from __future__ import annotations

import json
from pathlib import Path

from runtime.families import UnsupportedFamilyError, detect_family

from .bundle import export_llava
from .errors import ExportError, UnsupportedModelError
from .qwen_vl.bundle import export_qwen
from .source import locate

QWEN_OPTIONS = ("opset", "atol", "force", "log", "attention_form", "fused")      # what the Qwen exporter takes


def export_model(model: str, out: Path, **options):
    """Export ``model`` (alias, hub id or folder) with its family's exporter; returns that exporter's manifest."""
    source = locate(model, options.get("revision"))
    family = family_of(source.folder)
    if family.preprocessing != "qwen-patches":
        return export_llava(model, out, **options)
    if options.get("dtype") not in (None, "fp32"):
        raise ExportError(f"{family.name} exports in fp32 only for now (asked: {options['dtype']})")
    kept = {k: v for k, v in options.items() if k in QWEN_OPTIONS and v is not None}
    return export_qwen(source, family, out, **kept)


def family_of(folder: Path):
    """The checkpoint's family; ``UnsupportedModelError`` (an ``ExportError``) naming the supported ones."""
    try:
        return detect_family(json.loads((Path(folder) / "config.json").read_text()))
    except UnsupportedFamilyError as e:
        raise UnsupportedModelError(str(e)) from None
