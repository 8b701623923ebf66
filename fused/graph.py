"""The fused decoder pair, written op by op from the checkpoint's weights (ONNX Runtime contrib ops).

    checkpoint --CheckpointDecoder (one layer at a time)--+--> plain.PlainGraph     --> decoder_plain_<dtype>.onnx
                                                          +--> steered.SteeredGraph --> decoder_steered_<dtype>.onnx
                                  every weight written once --> decoder_fused_<dtype>.onnx_data (both point into it)

The plain graph (10 nodes a layer) runs the unsteered prompt and every decode step; the steered one
(26-28) runs the steered rows and any call whose attention is asked for.  Both keep the KV cache
in one shared past/present buffer per layer (``builder.py``), so a decode step copies nothing.
"""
from __future__ import annotations

from pathlib import Path

from onnx import helper

from .builder import GraphBuilder
from .errors import UnsupportedDecoderError
from .external import ExternalWeights
from .plain import PlainGraph
from .steered import SteeredGraph
from .weights import CheckpointDecoder, DecoderNumbers

ATTENTION_OP = "GroupQueryAttention"


def fused_files(dtype: str) -> dict[str, str]:
    """The pair's file names in a bundle: {"plain", "steered", "data"}."""
    return {"plain": f"decoder_plain_{dtype}.onnx", "steered": f"decoder_steered_{dtype}.onnx",
            "data": f"decoder_fused_{dtype}.onnx_data"}


def build_fused_decoders(source: CheckpointDecoder, folder: Path, dtype: str) -> dict:
    """Write the pair (``fused_files(dtype)``) into ``folder``; returns {"nodes_per_layer", "nodes", "ops"}."""
    n = source.numbers
    check_supported(n)
    ftype = helper.np_dtype_to_tensor_dtype(source.dtype)
    files = fused_files(dtype)
    weights = ExternalWeights(Path(folder) / files["data"])
    try:
        cos, sin = source.rotary()
        plain = PlainGraph(GraphBuilder(weights), n, ftype, cos, sin)
        steered = SteeredGraph(GraphBuilder(weights), n, ftype, cos, sin)
        del cos, sin
        for l, layer in enumerate(source.layers()):
            plain.layer(l, layer)
            steered.layer(l, layer)
        final_norm, lm_head = source.final_norm(), source.lm_head_weight()
        per_layer = {"plain": plain.finish(Path(folder) / files["plain"], final_norm, lm_head),
                     "steered": steered.finish(Path(folder) / files["steered"], final_norm, lm_head)}
    finally:
        weights.close()
    graphs = {"plain": plain.b, "steered": steered.b}
    return {"nodes_per_layer": per_layer, "nodes": {k: len(b.nodes) for k, b in graphs.items()},
            "attention_op": ATTENTION_OP,
            "ops": sorted({f"{nd.domain or 'ai.onnx'}.{nd.op_type}" for b in graphs.values() for nd in b.nodes})}


def check_supported(n: DecoderNumbers) -> None:
    """GroupQueryAttention (the shared KV buffer, flash kernels on CUDA) takes head sizes that are multiples of 8."""
    if n.head_dim % 8:
        raise UnsupportedDecoderError(f"head size {n.head_dim} is not a multiple of 8: ONNX Runtime's "
                                      f"GroupQueryAttention does not take it (the standard decoder serves this model)")
