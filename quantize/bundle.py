"""Quantize a bundle folder into a new one, atomically, with a manifest that says what was done.

    source (checked: manifest, sha256 of every file, fp32, not quantized yet)
      |-- decoder.onnx           --weights.to_nbits / to_fp16--> decoder.onnx (+ .onnx_data past 1 GiB)
      |-- vision.onnx            copied, or converted with --vision
      |-- embed.onnx             copied, or converted to fp16 with --embed
      |-- tokenizer.json         copied
      `-- calibration.json       NOT copied: it was fitted to the source's confidences (see docs/quantize.md)
    manifest.json: the source's, with new sha256 and a ``quantization`` record; the bundle is
    loaded with runtime.load() before it is published, and (--report) measured against the source.

Everything is written into ``.<out>.partial-<pid>`` beside the target, signed and renamed at the end
(``runtime.bundle_write.new_bundle``): a failure leaves no bundle behind, and the source folder is only
ever read.
"""
from __future__ import annotations

import dataclasses
import shutil
import sys
import time
from pathlib import Path

import onnxruntime

import runtime
from fused.external import external_files
from graphs.manifest import Manifest
from graphs.manifest_fields import fused_record_files
from runtime.bundle import Bundle
from runtime.bundle_write import check_target as check_free, new_bundle, sign
from runtime.calibration_file import CALIBRATION_FILE
from runtime.errors import BundleError, BundleExistsError

from . import weights as W
from .errors import AlreadyQuantizedError, OptionError, QuantizeError, SourceBundleError
from .fused_pair import quantize_pair
from .report import markdown, measure
from .settings import Settings

REPORT_FILE = "quantization.md"


def default_out(source: Path, to: str) -> Path:
    return source.parent / f"{source.name}-{to}"


def quantize_bundle(source: str | Path | Bundle, out: str | Path | None = None, settings: Settings | None = None, *,
                    force: bool = False, log=None, **options) -> Manifest:
    """Write a quantized copy of the bundle ``source`` to ``out`` (default ``<source>-<to>``); returns its manifest.

    ``settings`` (``quantize.Settings``), with any of its fields given as keyword ``options`` on top
    (``quantize_bundle(src, to="int4", report=True)``), checked once.  ``report`` measures the accuracy cost
    against the source (``quantize.report``) and writes it into the manifest and ``quantization.md``.
    Raises a :class:`QuantizeError` subclass for bad input (``BundleExistsError`` for an occupied ``out``).
    """
    log = log or _stderr_log
    settings = Settings.build(settings, **options)
    to = settings.to
    source = open_source(source if isinstance(source, Bundle) else Path(source).expanduser().resolve())
    out = Path(out).expanduser().resolve() if out is not None else default_out(source.folder, to)
    check_target(out, source.folder, force)
    with new_bundle(out, force) as partial:
        t0 = time.perf_counter()
        written = write_quantized(source, partial, settings, log)
        log(f"quantized in {time.perf_counter() - t0:.1f}s; loading it")
        _load_check(partial)
        if settings.report:
            accuracy = measure(source, partial, n_items=settings.report_items, seed=settings.report_seed, log=log)
            (partial / REPORT_FILE).write_text(markdown(written, accuracy))
            written = finish_manifest(partial, written, accuracy)
    log(f"bundle ready: {out}")
    return written


def open_source(source: Path | Bundle) -> Bundle:
    """The source bundle, every file's sha256 checked; refuses quantized and fp16 bundles."""
    try:
        bundle = Bundle.open(source, verify_checksums=True)
    except BundleError as e:
        raise SourceBundleError(f"cannot quantize {source}: {e}") from None
    q = bundle.manifest.quantization
    if q:
        raise AlreadyQuantizedError(f"{source} is already quantized ({q.get('precision')} from "
                                    f"{q.get('source_bundle')}); quantize its fp32 source instead")
    if bundle.manifest.dtype != "fp32":
        raise SourceBundleError(f"{source} is a {bundle.manifest.dtype} export; quantization starts from an fp32 "
                                f"export (just export <model> --dtype fp32)")
    return bundle


def check_target(out: Path, source: Path, force: bool) -> None:
    if out == source or source in out.parents or out in source.parents:
        raise BundleExistsError(f"--out {out} is, holds or lies inside the source bundle {source}; "
                                f"the source is never modified: pick another folder")
    check_free(out, force)


def write_quantized(bundle: Bundle, folder: Path, settings: Settings, log) -> Manifest:
    """Convert or copy every file of the source into ``folder`` and sign the new manifest."""
    source, manifest = bundle.folder, bundle.manifest
    graphs: dict[str, dict] = {}
    done: set[str] = set()
    for name, file in manifest.graphs.items():
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
        log(f"{name}: {_summary(converted.stats)} ({time.perf_counter() - t:.1f}s)")
    fused, fused_files = _fused_pairs(source, manifest, folder, settings, graphs, log)
    for f in manifest.sha256:       # the tokenizer, and whatever else the source lists but its calibration
        if f not in done and f not in fused_files and f != CALIBRATION_FILE and not (folder / f).exists():
            shutil.copy2(source / f, folder / f)
    kept = {*manifest.graphs.values(), *(f for r in fused.values() for f in fused_record_files(r))}
    io = None if manifest.io is None else {f: spec for f, spec in manifest.io.items() if f in kept}
    return sign(folder, dataclasses.replace(manifest, fused_decoders=fused or None, io=io,
                                            quantization=_record(bundle, settings, graphs)))


def _fused_pairs(source: Path, manifest: Manifest, folder: Path, settings: Settings, graphs: dict, log):
    """Quantize every fused pair of the source (int8, int4), or say why the quantized bundle has none:
    ({dtype: record}, the source's fused file names, written or not)."""
    records = manifest.fused_decoders or {}
    files = {f for r in records.values() for f in fused_record_files(r)}
    fused = {}
    for dtype, record in sorted(records.items()):
        if "plain" not in record:
            why = "built by an earlier version (one graph); rebuild it in the source with just fuse"
        elif settings.to not in W.NBITS:
            why = (f"--to {settings.to} does not convert the fused pair (int8 and int4 do); "
                   f"just fuse {source} --dtype fp16 builds a native fp16 pair")
        else:
            fused[dtype], stats = quantize_pair(source, record, folder, settings, log)
            graphs.update({f"fused_{dtype}_{which}": s for which, s in stats.items()})
            continue
        graphs[f"fused_{dtype}"] = {"not_converted": why}
        log(f"fused {dtype} decoder pair left out of the quantized bundle: {why}")
    return fused, files


def finish_manifest(folder: Path, manifest: Manifest, accuracy: dict) -> Manifest:
    record = dict(manifest.quantization, accuracy=accuracy, report=REPORT_FILE)
    return sign(folder, dataclasses.replace(manifest, quantization=record))


def _record(bundle: Bundle, settings: Settings, graphs: dict) -> dict:
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
        "io_dtype": bundle.manifest.dtype,      # graph inputs/outputs keep the source's types: the runtime feeds those
        "lm_head": "quantized" if settings.lm_head else "as exported",
        "graphs": graphs,
        "source_bundle": str(bundle.folder),
        "source_sha256": bundle.manifest_sha256,
        "accuracy": None,
    }


def _load_check(folder: Path) -> None:
    try:
        runtime.load(folder, providers=["cpu"])
    except BundleError as e:
        raise QuantizeError(f"the quantized bundle does not load in the runtime: {e}") from None


def _summary(stats: dict) -> str:
    if "matmulnbits" in stats:
        return (f"{stats['matmulnbits']} of {stats['weight_matmuls']} weight MatMuls -> MatMulNBits"
                + (f", {len(stats['skipped'])} kept" if stats["skipped"] else "")
                + (f", {len(stats['k_padded'])} with K padded to a whole block" if stats["k_padded"] else ""))
    if "matmulinteger" in stats:
        return (f"{stats['matmulinteger']} of {stats['weight_matmuls']} weight MatMuls -> MatMulInteger"
                + (f", {len(stats['skipped'])} kept" if stats["skipped"] else ""))
    return f"{stats['fp16_initializers']} weights fp16, {stats['kept_fp32_nodes']} nodes kept fp32"


def _stderr_log(message: str) -> None:
    print(f"[quantize] {message}", file=sys.stderr, flush=True)
