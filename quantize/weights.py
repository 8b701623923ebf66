"""One graph in, one graph out: ONNX Runtime's own tools, with the precision-critical nodes kept.

    int8 / int4  onnxruntime.quantization.matmul_nbits_quantizer.MatMulNBitsQuantizer: every MatMul
                 with a constant 2-D weight becomes a com.microsoft MatMulNBits (weight-only,
                 blockwise along K; K is zero-padded up to a whole block), except the LM head
                 unless asked.  Activations, the attention logits and everything else stay fp32.
    fp16         onnxruntime.transformers.float16.convert_float_to_float16 with fp32 graph I/O
                 (keep_io_types) and the nodes of ``graph.kept_fp32`` blocked; then the fp32 ->
                 fp16 -> fp32 Cast pairs the tool puts between two blocked nodes (and after the
                 kept-fp32 ``image_attention_scale`` input) are removed, so those islands really
                 compute in fp32.
    int8-dynamic onnxruntime.quantization.quantize_dynamic: the same weight MatMuls become
                 DynamicQuantizeLinear -> MatMulInteger -> Mul (weights int8 per output channel,
                 activations uint8 per tensor, quantized at run time), so the MatMul itself runs in
                 integer arithmetic: the lever for the compute-bound prefill and vision tower on a
                 CPU.  Not weight-only: the activations entering those MatMuls are rounded too.
                 Asymmetric (the default): uint8 weights with zero points (ONNX Runtime's U8U8
                 kernels).  ``symmetric``: int8 weights, 7 bits used (``reduce_range``): the U8S8
                 kernels of an x86 CPU without VNNI add pairs of u8 x s8 products in int16 and
                 saturate with 8-bit weights (measured here: 5x the max error of U8U8).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from onnx import TensorProto
from onnx.external_data_helper import load_external_data_for_model

from . import graph as G
from .errors import QuantizeError

PRECISIONS = ("fp16", "int8", "int4", "int8-dynamic")
NBITS = {"int8": 8, "int4": 4}          # MatMulNBits precisions
BLOCK_SIZES = (32, 64, 128)
ACCURACY_LEVELS = (0, 1, 2, 3, 4)     # MatMulNBits: 0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8 compute
# The default: int8 computes in int8 (level 4, activations quantized per block of 32 at run time). At levels 0-2
# ONNX Runtime's CPU kernel for 8-bit weights answered 3-5x slower than the fp32 bundle on the spatial model;
# level 4 as fast as fp32, same answers and alphas, steering cosine 0.97 (docs/quantize-speed.md). int4 too: on
# the spatial model its fused decode step took 14.4 ms at level 4 against 26.1 ms at level 0 (docs/fused.md).
DEFAULT_ACCURACY_LEVEL = {"int8": 4, "int4": 4}
NBITS_TOOL = "onnxruntime.quantization.matmul_nbits_quantizer.MatMulNBitsQuantizer"
FP16_TOOL = "onnxruntime.transformers.float16.convert_float_to_float16"
DYNAMIC_TOOL = "onnxruntime.quantization.quantize_dynamic"
_EXTERNAL_OVER = 1 << 30               # write weights beside the graph past 1 GiB (protobuf stops at 2)


@dataclass
class Converted:
    model: onnx.ModelProto
    stats: dict = field(default_factory=dict)


def load(path: Path) -> onnx.ModelProto:
    """The graph with its weights, shape-inferred (inference runs before the weights are read: no 2 GB limit)."""
    model = onnx.load(str(path), load_external_data=False)
    model = onnx.shape_inference.infer_shapes(model)
    load_external_data_for_model(model, str(Path(path).parent))
    G.name_nodes(model.graph)
    return model


def save(model: onnx.ModelProto, path: Path) -> list[str]:
    """Write ``path`` (+ ``<name>_data`` when the weights pass 1 GiB); returns the file names written."""
    weights = sum(len(t.raw_data) for t in model.graph.initializer)
    if weights <= _EXTERNAL_OVER:
        onnx.save_model(model, str(path))
        return [path.name]
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=f"{path.name}_data", size_threshold=1024)
    return [path.name, f"{path.name}_data"]


def already_quantized(model: onnx.ModelProto) -> str | None:
    """Why ``model`` looks quantized already (MatMulNBits nodes or fp16 weights), or None."""
    for op in ("MatMulNBits", "MatMulInteger", "DynamicQuantizeMatMul"):
        found = sum(1 for n in model.graph.node if n.op_type == op)
        if found:
            return f"it has {found} {op} nodes"
    half = sum(1 for t in model.graph.initializer if t.data_type == TensorProto.FLOAT16)
    return f"it has {half} fp16 weights" if half else None


# -- int8 / int4 ---------------------------------------------------------------------------

def _nbits_quantizer():
    """Import the quantizer without its module's logging.basicConfig(INFO) taking over the root logger."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    return MatMulNBitsQuantizer


def to_nbits(model: onnx.ModelProto, bits: int, block_size: int, symmetric: bool, accuracy_level: int,
             keep_lm_head: bool) -> Converted:
    index = G.Index(model.graph)
    candidates = G.weight_matmuls(index)
    head = G.lm_head(index)
    exclude = [head] if keep_lm_head and head else []
    quantizer = _nbits_quantizer()(model, bits=bits, block_size=block_size, is_symmetric=symmetric,
                                   accuracy_level=accuracy_level or None, nodes_to_exclude=exclude)
    quantizer.process()
    out = quantizer.model.model
    still = {n.name for n in out.graph.node if n.op_type == "MatMul"}
    skipped = {name: ("the LM head (kept as exported; --lm-head quantizes it)" if name in exclude else
                      "left as MatMul by MatMulNBitsQuantizer (weight not 2-D?)")
               for name in candidates if name in still}
    nbits = [n for n in out.graph.node if n.op_type == "MatMulNBits"]
    padded = [n.name for n in nbits
              if next(a.i for a in n.attribute if a.name == "K") % block_size]
    return Converted(out, {
        "weight_matmuls": len(candidates),
        "matmulnbits": len(nbits),
        "skipped": skipped,
        "k_padded": padded,       # K not a multiple of the block: zero-padded to a whole block
    })


# -- int8-dynamic ----------------------------------------------------------------------------

def to_dynamic_int8(model: onnx.ModelProto, symmetric: bool, keep_lm_head: bool, scratch: Path) -> Converted:
    """Every weight MatMul (but the LM head unless asked) -> DynamicQuantizeLinear + MatMulInteger + Mul.

    ``scratch``: an empty folder the tool writes its output into (it only writes files).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    index = G.Index(model.graph)
    candidates = G.weight_matmuls(index)
    head = G.lm_head(index)
    exclude = [head] if keep_lm_head and head else []
    chosen = [name for name in candidates if name not in exclude]
    target = scratch / "dynamic.onnx"
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    root.setLevel(logging.ERROR)      # its "consider pre-processing" advice is for QDQ static quantization
    try:
        quantize_dynamic(model, target, per_channel=True, reduce_range=symmetric,
                         weight_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
                         op_types_to_quantize=["MatMul"], nodes_to_quantize=chosen, use_external_data_format=True,
                         extra_options={"MatMulConstBOnly": True})
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    out = onnx.load(str(target))
    integer = [n for n in out.graph.node if n.op_type == "MatMulInteger"]
    still = {n.name for n in out.graph.node if n.op_type == "MatMul"}
    skipped = {name: ("the LM head (kept as exported; --lm-head quantizes it)" if name in exclude else
                      "left as MatMul by quantize_dynamic")
               for name in candidates if name in still}
    if len(integer) != len(chosen) - len([n for n in chosen if n in still]):
        raise QuantizeError(f"quantize_dynamic wrote {len(integer)} MatMulInteger nodes for {len(chosen)} weight MatMuls")
    return Converted(out, {
        "weight_matmuls": len(candidates),
        "matmulinteger": len(integer),
        "skipped": skipped,
        "weights": "int8, 7 bits used (reduce_range), per channel" if symmetric else "uint8 with zero points, per channel",
        "activations": "uint8 per tensor, at run time",
    })


# -- fp16 ----------------------------------------------------------------------------------

def to_fp16(model: onnx.ModelProto, keep_lm_head: bool) -> Converted:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("onnxruntime.transformers.float16").setLevel(logging.WARNING)

    index = G.Index(model.graph)
    kept = G.kept_fp32(index, keep_lm_head=keep_lm_head)
    head = G.lm_head(index)
    out = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=True,
                                   op_block_list=[*DEFAULT_OP_BLOCK_LIST, *G.FP32_OPS], node_block_list=sorted(kept))
    removed = drop_round_trips(out.graph)
    G.topological_sort(out.graph)
    leaks = half_inputs(out.graph, kept)
    if leaks:
        raise QuantizeError(f"the fp16 conversion left fp16 inputs on nodes that must stay fp32: {', '.join(leaks[:5])}")
    return Converted(out, {
        "kept_fp32_nodes": len(kept),
        "round_trip_casts_removed": removed,
        "fp16_initializers": sum(1 for t in out.graph.initializer if t.data_type == TensorProto.FLOAT16),
        "fp32_initializers": sum(1 for t in out.graph.initializer if t.data_type == TensorProto.FLOAT),
        "lm_head": None if head is None else ("fp32" if keep_lm_head else "fp16"),
    })


def _cast_to(node: onnx.NodeProto) -> int | None:
    return next((a.i for a in node.attribute if a.name == "to"), None)


def elem_types(graph: onnx.GraphProto) -> dict[str, int]:
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.input, *graph.output]}
    types.update({t.name: t.data_type for t in graph.initializer})
    return types


def drop_round_trips(graph: onnx.GraphProto) -> int:
    """Replace every Cast(fp16 -> fp32) of a Cast(fp32 -> fp16) of an fp32 tensor by that tensor; drop dead Casts.

    Returns how many Cast nodes were removed.  Only exact round trips are touched: the result
    computes the same graph with one rounding fewer.
    """
    types = elem_types(graph)
    index = G.Index(graph)
    rename: dict[str, str] = {}
    drop: set[str] = set()
    for c2 in graph.node:
        if c2.op_type != "Cast" or _cast_to(c2) != TensorProto.FLOAT or c2.output[0] in index.outputs:
            continue
        c1 = index.producer.get(c2.input[0])
        if c1 is None or c1.op_type != "Cast" or _cast_to(c1) != TensorProto.FLOAT16:
            continue
        if types.get(c1.input[0]) != TensorProto.FLOAT:
            continue
        rename[c2.output[0]] = c1.input[0]
        drop.add(c2.name)
    for n in graph.node:
        for i, name in enumerate(n.input):
            if name in rename:
                n.input[i] = rename[name]
    kept = [n for n in graph.node if n.name not in drop]
    removed = len(drop)
    while True:   # Casts nothing reads any more
        used = {i for n in kept for i in n.input} | {o.name for o in graph.output}
        dead = [n for n in kept if n.op_type == "Cast" and not any(o in used for o in n.output)]
        if not dead:
            break
        names = {n.name for n in dead}
        kept = [n for n in kept if n.name not in names]
        removed += len(dead)
    graph.ClearField("node")
    graph.node.extend(kept)
    return removed


def half_inputs(graph: onnx.GraphProto, names: set[str]) -> list[str]:
    """Nodes in ``names`` that read an fp16 tensor (empty when the fp32 islands are intact)."""
    types = elem_types(graph)
    return [f"{n.op_type} {n.name}" for n in graph.node
            if n.name in names and any(types.get(i) == TensorProto.FLOAT16 for i in n.input)]
