"""Quantize a bundle folder into a new one, atomically, with a manifest that says what was done.

    source (checked: manifest, sha256 of every file, fp32, not quantized yet)
      |-- decoder.onnx           --weights.to_nbits / to_fp16--> decoder.onnx (+ .onnx_data past 1 GiB)
      |-- vision.onnx            copied, or converted with --vision
      |-- embed.onnx             copied, or converted to fp16 with --embed
      |-- tokenizer.json         copied
      `-- calibration.json       NOT copied: it was fitted to the source's confidences (see docs/quantize.md)
    manifest.json: the source's, with new sha256 and a ``quantization`` record; the bundle is
    loaded with runtime.load() before it is published, and (--report) measured against the source.
    A Qwen bundle: the same conversions through ``qwen_bundle.py`` (its own manifest and checks).

Everything is written into ``.<out>.partial-<pid>`` beside the target, signed and renamed at the end
(``runtime.bundle_write.new_bundle``): a failure leaves no bundle behind, and the source folder is only
ever read.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import runtime
from graphs.manifest import Manifest
from graphs.manifest_fields import fused_record_files
from graphs.qwen_manifest import QwenManifest
from runtime.bundle import Bundle
from runtime.bundle_write import new_bundle, sign
from runtime.errors import BundleError

from .convert import convert_graphs, copy_rest, fused_pairs, quantization_record
from .errors import AlreadyQuantizedError, QuantizeError, SourceBundleError
from .qwen_bundle import quantize_qwen
from .qwen_source import is_qwen_bundle
from .report import markdown, measure
from .settings import Settings
from .target import REPORT_FILE, check_target, default_out


def quantize_bundle(source: str | Path | Bundle, out: str | Path | None = None, settings: Settings | None = None, *,
                    force: bool = False, log=None, **options) -> Manifest | QwenManifest:
    """Write a quantized copy of the bundle ``source`` to ``out`` (default ``<source>-<to>``); returns its manifest.

    A Qwen2.5-VL / Qwen3-VL bundle (its manifest's ``family``) goes to ``qwen_bundle.quantize_qwen``.

    ``settings`` (``quantize.Settings``), with any of its fields given as keyword ``options`` on top
    (``quantize_bundle(src, to="int4", report=True)``), checked once.  ``report`` measures the accuracy cost
    against the source (``quantize.report``) and writes it into the manifest and ``quantization.md``.
    Raises a :class:`QuantizeError` subclass for bad input (``BundleExistsError`` for an occupied ``out``).
    """
    log = log or _stderr_log
    settings = Settings.build(settings, **options)
    if not isinstance(source, Bundle) and is_qwen_bundle(Path(source).expanduser()):
        return quantize_qwen(Path(source).expanduser().resolve(), out, settings, force=force, log=log)
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


def write_quantized(bundle: Bundle, folder: Path, settings: Settings, log) -> Manifest:
    """Convert or copy every file of the source into ``folder`` and sign the new manifest."""
    source, manifest = bundle.folder, bundle.manifest
    graphs, done = convert_graphs(source, manifest.graphs, folder, settings, log)
    fused, fused_files = fused_pairs(source, manifest.fused_decoders, folder, settings, graphs, log)
    copy_rest(source, manifest.sha256, done | fused_files, folder)
    kept = {*manifest.graphs.values(), *(f for r in fused.values() for f in fused_record_files(r))}
    io = None if manifest.io is None else {f: spec for f, spec in manifest.io.items() if f in kept}
    record = quantization_record(settings, graphs, manifest.dtype, bundle.folder, bundle.manifest_sha256)
    return sign(folder, dataclasses.replace(manifest, fused_decoders=fused or None, io=io, quantization=record))


def finish_manifest(folder: Path, manifest: Manifest, accuracy: dict) -> Manifest:
    record = dict(manifest.quantization, accuracy=accuracy, report=REPORT_FILE)
    return sign(folder, dataclasses.replace(manifest, quantization=record))


def _load_check(folder: Path) -> None:
    try:
        runtime.load(folder, providers=["cpu"])
    except BundleError as e:
        raise QuantizeError(f"the quantized bundle does not load in the runtime: {e}") from None


def _stderr_log(message: str) -> None:
    print(f"[quantize] {message}", file=sys.stderr, flush=True)
