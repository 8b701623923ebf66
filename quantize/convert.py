"""The files of a source bundle converted or copied into a new bundle's folder, whatever its family.

    graph files   {name: file}: each converted as ``settings.converts(name)`` says (weights.py), else copied
    fused pairs   {dtype: record}: MatMulNBits inside both graphs (int8, int4: fused_pair.py); fp16 and
                  int8-dynamic leave the pair out, and say why in the stats
    the rest      every other file the source's digest table lists (tokenizer, configs), but calibration.json
    the record    the manifest's ``quantization``: method, tool, bits, block, the stats per graph, the source

The caller (``bundle.py`` for LLaVA, ``qwen_bundle.py`` for Qwen) signs the manifest afterwards.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import onnxruntime

from fused.external import external_files
from graphs.manifest_fields import fused_record_files
from runtime.calibration_file import CALIBRATION_FILE

from . import weights as W
from .errors import AlreadyQuantizedError, SourceBundleError
from .fused_pair import quantize_pair
from .settings import Settings


def convert_graphs(source: Path, graph_files: dict[str, str], folder: Path, settings: Settings,
                   log) -> tuple[dict[str, dict], set[str]]:
    """Every graph of ``graph_files`` ({name: file} in ``source``) into ``folder``: (stats per graph, files done)."""
    graphs: dict[str, dict] = {}
    done: set[str] = set()
    for name, file in graph_files.items():
        if not settings.converts(name):
            for f in [file, *external_files(source / file)]:
                shutil.copy2(source / f, folder / f)
                done.add(f)
            graphs[name] = {"copied": True}
            continue
        t = time.perf_counter()
        try:
            model = W.load(source / file)
        except Exception as e:   # onnx raises its own DecodeError / ValidationError types
            raise SourceBundleError(f"cannot read {source / file}: {type(e).__name__}: {e}") from None
        why = W.already_quantized(model)
        if why:
            raise AlreadyQuantizedError(f"{source / file} is already quantized ({why}) although its manifest "
                                        f"says nothing about it; quantize the fp32 export instead")
        done.update([file, *external_files(source / file)])
        keep_head = not settings.lm_head
        if settings.to == "fp16":
            converted = W.to_fp16(model, keep_lm_head=keep_head)
        elif settings.to == "int8-dynamic":
            scratch = folder / f".{name}-scratch"
            scratch.mkdir()
            try:
                converted = W.to_dynamic_int8(model, settings.symmetric, keep_lm_head=keep_head, scratch=scratch)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        else:
            converted = W.to_nbits(model, settings.bits, settings.block_size, settings.symmetric,
                                   settings.accuracy_level, keep_lm_head=keep_head)
        del model
        W.save(converted.model, folder / file)
        graphs[name] = converted.stats
        log(f"{name}: {summary(converted.stats)} ({time.perf_counter() - t:.1f}s)")
    return graphs, done


def fused_pairs(source: Path, records: dict[str, dict] | None, folder: Path, settings: Settings, graphs: dict,
                log, other_pair: str | None = None) -> tuple[dict[str, dict], set[str]]:
    """Quantize every fused pair of the source (int8, int4), or say why the quantized bundle has none:
    ({dtype: record}, the source's fused file names, written or not).  ``other_pair``: how a pair for the other
    precisions is had (default: ``just fuse`` builds a native fp16 one)."""
    other_pair = other_pair or f"just fuse {source} --dtype fp16 builds a native fp16 pair"
    records = records or {}
    files = {f for r in records.values() for f in fused_record_files(r)}
    fused = {}
    for dtype, record in sorted(records.items()):
        if "plain" not in record:
            why = "built by an earlier version (one graph); rebuild it in the source with just fuse"
        elif settings.to not in W.NBITS:
            why = f"--to {settings.to} does not convert the fused pair (int8 and int4 do); {other_pair}"
        else:
            fused[dtype], stats = quantize_pair(source, record, folder, settings, log)
            graphs.update({f"fused_{dtype}_{which}": s for which, s in stats.items()})
            continue
        graphs[f"fused_{dtype}"] = {"not_converted": why}
        log(f"fused {dtype} decoder pair left out of the quantized bundle: {why}")
    return fused, files


def copy_rest(source: Path, listed: dict[str, str], skip: set[str], folder: Path) -> None:
    """Every file ``listed`` in the source's digest table, but ``skip`` and calibration.json, copied into ``folder``."""
    for f in listed:
        if f not in skip and f != CALIBRATION_FILE and not (folder / f).exists():
            shutil.copy2(source / f, folder / f)


def quantization_record(settings: Settings, graphs: dict, io_dtype: str, source: Path, source_sha256: str) -> dict:
    """The manifest's ``quantization`` (its ``accuracy`` filled in by a report)."""
    nbits = settings.to in W.NBITS
    method, tool = {
        "fp16": ("fp16 weights and activations, fp32 islands", W.FP16_TOOL),
        "int8-dynamic": ("dynamic int8 (weights per channel, activations per tensor at run time; MatMulInteger)",
                         W.DYNAMIC_TOOL),
    }.get(settings.to, ("MatMulNBits (weight-only, blockwise)", W.NBITS_TOOL))
    return {
        "precision": settings.to,
        "method": method,
        "tool": tool,
        "onnxruntime": onnxruntime.__version__,
        "bits": settings.bits,
        "block_size": settings.block_size if nbits else None,
        "symmetric": settings.symmetric if settings.to != "fp16" else None,
        "accuracy_level": settings.accuracy_level if nbits else None,
        "io_dtype": io_dtype,      # graph inputs/outputs keep the source's types: the runtime feeds those
        "lm_head": "quantized" if settings.lm_head else "as exported",
        "graphs": graphs,
        "source_bundle": str(source),
        "source_sha256": source_sha256,
        "accuracy": None,
    }


def summary(stats: dict) -> str:
    if "matmulnbits" in stats:
        return (f"{stats['matmulnbits']} of {stats['weight_matmuls']} weight MatMuls -> MatMulNBits"
                + (f", {len(stats['skipped'])} kept" if stats["skipped"] else "")
                + (f", {len(stats['k_padded'])} with K padded to a whole block" if stats["k_padded"] else ""))
    if "matmulinteger" in stats:
        return (f"{stats['matmulinteger']} of {stats['weight_matmuls']} weight MatMuls -> MatMulInteger"
                + (f", {len(stats['skipped'])} kept" if stats["skipped"] else ""))
    return f"{stats['fp16_initializers']} weights fp16, {stats['kept_fp32_nodes']} nodes kept fp32"
