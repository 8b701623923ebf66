"""Quantize a Qwen2.5-VL / Qwen3-VL bundle into a new one: LLaVA's conversions, the Qwen manifest and loops.

    source (qwen_source.open_qwen: every digest checked, fp32, not quantized yet)
      |-- decoder.onnx      --weights.to_nbits (int8 / int4: MatMulNBits) / to_dynamic_int8--> decoder.onnx
      |-- fused pair        int8 / int4: MatMulNBits in both graphs, one weights file; int8-dynamic: left out
      |-- vision.onnx       copied, or converted with --vision
      |-- embed.onnx        copied (a Gather: no MatMul to convert)
      `-- tokenizer, chat template, preprocessor config: copied
    manifest.json: the source's QwenManifest with a ``quantization`` record, signed by runtime.bundle_write.sign;
    opened with QwenModel (and QwenFusedModel where the pair is kept) before it is published; --report measures
    it against the source (qwen_report.py).

fp16 is refused: the Qwen export is fp32 only and nothing here has checked which Qwen nodes must stay fp32.
Written into ``.<out>.partial-<pid>`` (``new_bundle``) and renamed at the end: a failure leaves nothing.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from graphs.qwen_manifest import QwenManifest
from runtime.bundle_write import new_bundle, sign
from runtime.qwen_vl.answer import QwenModel
from runtime.qwen_vl.fused_decoder import QwenFusedModel

from .convert import convert_graphs, copy_rest, fused_pairs, quantization_record
from .errors import OptionError, QuantizeError
from .qwen_report import markdown, measure
from .qwen_source import QwenSource, open_qwen
from .settings import Settings
from .target import REPORT_FILE, check_target, default_out

QWEN_PRECISIONS = ("int8", "int4", "int8-dynamic")


def quantize_qwen(source: Path, out: Path | None, settings: Settings, *, force: bool = False, log) -> QwenManifest:
    """Write the quantized copy of the Qwen bundle ``source`` to ``out`` (default ``<source>-<to>``)."""
    if settings.to not in QWEN_PRECISIONS:
        raise OptionError(f"--to {settings.to} is not offered for Qwen bundles (only {', '.join(QWEN_PRECISIONS)}): "
                          f"the Qwen export is fp32 only and which of its nodes must stay fp32 is not checked yet")
    opened = open_qwen(source)
    out = Path(out).expanduser().resolve() if out is not None else default_out(opened.folder, settings.to)
    check_target(out, opened.folder, force)
    with new_bundle(out, force) as partial:
        t0 = time.perf_counter()
        written = write_quantized(opened, partial, settings, log)
        log(f"quantized in {time.perf_counter() - t0:.1f}s; opening it")
        load_check(partial, written)
        if settings.report:
            accuracy = measure(opened.folder, partial, n_items=settings.report_items, seed=settings.report_seed, log=log)
            (partial / REPORT_FILE).write_text(markdown(written, accuracy))
            record = dict(written.quantization, accuracy=accuracy, report=REPORT_FILE)
            written = sign(partial, dataclasses.replace(written, quantization=record))
    log(f"bundle ready: {out}")
    return written


def write_quantized(source: QwenSource, folder: Path, settings: Settings, log) -> QwenManifest:
    """Convert or copy every file of the source into ``folder`` and sign the new manifest."""
    m = source.manifest
    graphs, done = convert_graphs(source.folder, source.graph_files(), folder, settings, log)
    fused, fused_files = fused_pairs(source.folder, m.fused_decoders, folder, settings, graphs, log,
                                     other_pair="a Qwen pair is written at export only, in fp32")
    copy_rest(source.folder, m.sha256, done | fused_files, folder)
    record = quantization_record(settings, graphs, m.dtype, source.folder, source.manifest_sha256)
    return sign(folder, dataclasses.replace(m, fused_decoders=fused or None, quantization=record))


def load_check(folder: Path, manifest: QwenManifest) -> None:
    """Every graph of the quantized bundle opens in ONNX Runtime through the Qwen loops (QuantizeError if not)."""
    try:
        QwenModel(folder)
        if manifest.fused_decoders:
            QwenFusedModel(folder)
    except Exception as e:          # onnxruntime raises its own Fail / InvalidGraph types
        raise QuantizeError(f"the quantized bundle does not open in the runtime: {type(e).__name__}: {e}") from None
