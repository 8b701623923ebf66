"""Which exporter a checkpoint goes to: its family (``runtime.families.detect_family``, by ``model_type``).

    config.json model_type --detect_family--> llava       -> export.bundle.export_llava
                                              qwen2_5_vl  -> export.qwen_vl.bundle.export_qwen
                                              qwen3_vl    -> export.qwen_vl.bundle.export_qwen
                                              other       -> UnsupportedModelError naming the families

The Qwen exporter takes fewer options than LLaVA's: one asked for with a value other than its default
(``--pad-to-square``, ``--memory-log`` ...) is an ``UnsupportedOptionError`` naming it and the family, raised
before the checkpoint is loaded (for an alias of a Qwen model, before it is even downloaded).
"""
from __future__ import annotations

import json
from pathlib import Path

from runtime.families import UnsupportedFamilyError, detect_family

from .bundle import export_llava
from .errors import ExportError, UnsupportedModelError, UnsupportedOptionError
from .qwen_vl.bundle import export_qwen
from .source import ALIAS_MODEL_TYPES, locate

QWEN_OPTIONS = ("opset", "atol", "force", "log", "attention_form", "fused")      # what the Qwen exporter takes
# LLaVA-only options: option -> (its default, the command-line flag that sets it)
LLAVA_ONLY = {"pad_to_square": (False, "--pad-to-square"), "memory_log": (None, "--memory-log"),
              "parity_layers": (None, "--parity-layers"), "parity_cases": (None, "--parity-cases"),
              "check_memory": (True, "--no-memory-check"), "bound_weights": (True, "--exporter-writes-weights")}


def export_model(model: str, out: Path, **options):
    """Export ``model`` (alias, hub id or folder) with its family's exporter; returns that exporter's manifest."""
    known = ALIAS_MODEL_TYPES.get(model)
    if known is not None and known != "llava":
        check_qwen_options(detect_family({"model_type": known}), options)      # before the download
    source = locate(model, options.get("revision"))
    family = family_of(source.folder)
    if family.preprocessing != "qwen-patches":
        return export_llava(model, out, **options)
    check_qwen_options(family, options)
    kept = {k: v for k, v in options.items() if k in QWEN_OPTIONS and v is not None}
    return export_qwen(source, family, out, **kept)


def check_qwen_options(family, options: dict) -> None:
    """``UnsupportedOptionError`` naming every LLaVA-only option set away from its default, and the family."""
    if options.get("dtype") not in (None, "fp32"):
        raise UnsupportedOptionError(f"{family.name} exports in fp32 only for now (asked: --dtype {options['dtype']})")
    unknown = sorted(set(options) - set(QWEN_OPTIONS) - set(LLAVA_ONLY) - {"dtype", "revision"})
    if unknown:
        raise UnsupportedOptionError(f"unknown export option(s) {', '.join(unknown)}")
    given = [flag for name, (default, flag) in LLAVA_ONLY.items() if name in options and options[name] != default]
    if given:
        raise UnsupportedOptionError(
            f"{', '.join(given)} {'is a LLaVA option' if len(given) == 1 else 'are LLaVA options'}: the {family.name} "
            f"({family.model_type}) exporter does not take {'it' if len(given) == 1 else 'them'}; "
            f"drop {'it' if len(given) == 1 else 'them'} (it takes --out, --opset, --atol, --attention-form, "
            f"--no-fused, --revision, --force, --dtype fp32)")


def family_of(folder: Path):
    """The checkpoint's family; ``UnsupportedModelError`` (an ``ExportError``) naming the supported ones."""
    try:
        return detect_family(json.loads((Path(folder) / "config.json").read_text()))
    except UnsupportedFamilyError as e:
        raise UnsupportedModelError(str(e)) from None
