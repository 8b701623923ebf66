"""The fused decoder pair of a bundle, quantized with the rest: MatMulNBits inside both graphs, one weights file.

    source: decoder_plain_fp32.onnx ----weights.to_nbits----+
            decoder_steered_fp32.onnx --weights.to_nbits----+--> every initializer written once, by name,
            (decoder_fused_fp32.onnx_data)                       into decoder_fused_fp32.onnx_data
                                                                 (both graphs quantize a weight the same way)

The pair keeps its file names and its shared KV buffers; only its weight MatMuls change (the LM
head as ``--lm-head`` says).  fp16 and int8-dynamic do not convert the pair: the quantized bundle
then has none, which the log and the manifest's ``quantization.graphs`` say (``just fuse SOURCE
--dtype fp16`` builds a native fp16 pair).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from fused.external import ExternalWeights

from . import weights as W
from .errors import SourceBundleError

_INLINE_BYTES = 1024            # smaller initializers (constants, shapes) stay inside the graph file


def quantize_pair(source: Path, record: dict, folder: Path, settings, log) -> tuple[dict, dict]:
    """Write the quantized pair into ``folder``; returns (its manifest record, per-graph stats)."""
    stats = {}
    weights = ExternalWeights(folder / record["data"])
    try:
        for which in ("plain", "steered"):
            t = time.perf_counter()
            try:
                model = W.load(source / record[which])
            except Exception as e:   # onnx raises its own DecodeError / ValidationError types
                raise SourceBundleError(f"cannot read {source / record[which]}: {type(e).__name__}: {e}") from None
            converted = W.to_nbits(model, settings.bits, settings.block_size, settings.symmetric,
                                   settings.accuracy_level, keep_lm_head=not settings.lm_head)
            del model
            _externalize(converted.model, weights)
            onnx.save(converted.model, str(folder / record[which]))
            stats[which] = converted.stats
            log(f"fused {which} graph: {converted.stats['matmulnbits']} of {converted.stats['weight_matmuls']} "
                f"weight MatMuls -> MatMulNBits ({time.perf_counter() - t:.1f}s)")
    finally:
        weights.close()
    new = {**record, "quantization": {"precision": settings.to, "bits": settings.bits,
                                      "block_size": settings.block_size, "accuracy_level": settings.accuracy_level}}
    return new, stats


def _externalize(model: onnx.ModelProto, weights: ExternalWeights) -> None:
    """Move every large initializer into the shared weights file (a name already there is pointed at, not rewritten)."""
    for i, tensor in enumerate(model.graph.initializer):
        if len(tensor.raw_data) <= _INLINE_BYTES and tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        array = numpy_helper.to_array(tensor)
        model.graph.initializer[i].CopyFrom(weights.tensor(tensor.name, np.ascontiguousarray(array)))
