"""The fused decoder graph, written op by op from the checkpoint's weights (ONNX Runtime contrib ops).

Same inputs and outputs as the standard decoder (``graphs.contracts.decoder_contract``), so the
runtime feeds either the same way.  Once per call:

    attention_mask [1, T] --ReduceSum-1--> seqlens_k [1] int32 ; Shape[1] --> total_len int32
    image_attention_scale [1, L, H], image_token_mask [1, T]
        --> coef [L, 1, H, 1, T] = (alpha - 1) * is_image            (float; alpha 1 -> 0)

Per layer l (x: the residual stream [1, S, C]; F: the graph's float type):

    x --(Skip)SimplifiedLayerNorm--> h --MatMul qkv--> Split --> q [1,S,H*D], k [1,S,KV*D], v
    q, k --RotaryEmbedding(position_ids)--> q', k'
    steering bias (additive: alpha (q.k)/sqrt(d) = (q.k)/sqrt(d) + (alpha-1)(q.k)/sqrt(d)):
        q' -> [1, KV, G*S, D];  K = Concat(past_key, k' as [1, KV, S, D])        [1, KV, T, D]
        s = FusedMatMul(q', K^T, alpha = 1/sqrt(d)) -> [1, H, S, T]                 the row logits
        bias = s * coef[l]                                                          [1, H, S, T]
    GroupQueryAttention(q', k', v, past_key, past_value, seqlens_k, total_len, attention_bias=bias)
        --> attn [1, S, H*D], present_key / present_value [1, KV, T, D] (causal; past ++ new)
        (MultiHeadAttention(unidirectional) for a multi-head decoder whose head size GQA refuses)
    attn --MatMul o--> --SkipSimplifiedLayerNorm(+x)--> h2 --MatMul gate_up--> Split --> g, u
    QuickGelu(g, alpha=1) = SiLU(g);  (SiLU(g) * u) --MatMul down--> next layer's skip input
    attention row: Softmax((s + bias)[:, :, -1]) mean over heads --> [1, 1, T]   (the call's last row)

Then SkipSimplifiedLayerNorm(final) -> last position -> MatMul lm_head -> logits [1, V] float32;
the rows concatenated -> last_row_attention [1, L, T] float32, summed over image keys ->
image_attention_share [1, L].  The causal mask is GroupQueryAttention's own; the steering bias
is added to every row of the call, as ``image_attention_scale`` is defined.  The attention mask
is taken as all ones (batch 1, no padding: what the runtime feeds).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from graphs.contracts import (IMAGE_ATTENTION_SCALE, IMAGE_ATTENTION_SHARE, IMAGE_TOKEN_MASK, LAST_ROW_ATTENTION,
                              PAST_KEY, PAST_VALUE, PRESENT_KEY, PRESENT_VALUE)

from .external import ExternalWeights
from .errors import UnsupportedDecoderError
from .weights import CheckpointDecoder, DecoderNumbers

MS = "com.microsoft"
OPSET = 18              # the default domain; com.microsoft ops at version 1
_INT_MAX = np.iinfo(np.int64).max


class _Builder:
    """Nodes with generated output names, small constants inline, weights external."""

    def __init__(self, weights: ExternalWeights):
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.weights = weights
        self._count = 0
        self._consts: dict[tuple, str] = {}

    def op(self, op_type: str, inputs: list[str], outputs: int | list[str] = 1, domain: str = "", **attrs):
        self._count += 1
        names = outputs if isinstance(outputs, list) else [f"{op_type}_{self._count}_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, names, name=f"{op_type}_{self._count}",
                                           domain=domain, **attrs))
        return names[0] if len(names) == 1 else names

    def const(self, values, dtype=np.int64) -> str:
        array = np.asarray(values, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._consts:
            name = f"const_{len(self._consts)}"
            self.initializers.append(onnx.numpy_helper.from_array(array, name))
            self._consts[key] = name
        return self._consts[key]

    def weight(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(self.weights.tensor(name, array))
        return name


def build_fused_decoder(source: CheckpointDecoder, path: Path) -> dict:
    """Write ``path`` (+ ``<path>_data``); returns {"nodes", "nodes_per_layer", "ops"}."""
    n = source.numbers
    ftype = helper.np_dtype_to_tensor_dtype(source.dtype)
    weights = ExternalWeights(Path(str(path) + "_data"))
    b = _Builder(weights)
    try:
        inputs, outputs = _io(n, ftype)
        seqlens, total, coef = _call_inputs(b, n, ftype)
        cos, sin = source.rotary()
        cos, sin = b.weight("rotary_cos", cos), b.weight("rotary_sin", sin)     # [P, D/2]
        before = len(b.nodes)
        x, residual, rows = "inputs_embeds", None, []
        for l, layer in enumerate(source.layers()):
            x, residual, row = _layer(b, n, l, layer, x, residual, seqlens, total, coef, cos, sin)
            rows.append(row)
        per_layer = (len(b.nodes) - before) / n.num_layers
        _head(b, n, source, x, residual, rows, ftype)
    finally:
        weights.close()
    graph = helper.make_graph(b.nodes, "fused_decoder", inputs, outputs, initializer=b.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS, 1)],
                              producer_name="adaptvis-edge fused")
    model.ir_version = 9
    onnx.save(model, str(path))
    return {"nodes": len(b.nodes), "nodes_per_layer": per_layer, "attention_op": attention_op(n),
            "ops": sorted({f"{nd.domain or 'ai.onnx'}.{nd.op_type}" for nd in b.nodes})}


def _io(n: DecoderNumbers, ftype: int):
    kv = ("batch", n.num_kv_heads, "past_sequence", n.head_dim)
    present = ("batch", n.num_kv_heads, "total_sequence", n.head_dim)
    inputs = [helper.make_tensor_value_info("inputs_embeds", ftype, ("batch", "sequence", n.hidden)),
              helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ("batch", "total_sequence")),
              helper.make_tensor_value_info("position_ids", TensorProto.INT64, ("batch", "sequence"))]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ("batch", n.vocab))]
    for i in range(n.num_layers):
        for past, pres in ((PAST_KEY, PRESENT_KEY), (PAST_VALUE, PRESENT_VALUE)):
            inputs.append(helper.make_tensor_value_info(past.format(i=i), ftype, kv))
            outputs.append(helper.make_tensor_value_info(pres.format(i=i), ftype, present))
    inputs += [helper.make_tensor_value_info(IMAGE_ATTENTION_SCALE, TensorProto.FLOAT,
                                             ("batch", n.num_layers, n.num_heads)),
               helper.make_tensor_value_info(IMAGE_TOKEN_MASK, TensorProto.BOOL, ("batch", "total_sequence"))]
    outputs += [helper.make_tensor_value_info(LAST_ROW_ATTENTION, TensorProto.FLOAT,
                                              ("batch", n.num_layers, "total_sequence")),
                helper.make_tensor_value_info(IMAGE_ATTENTION_SHARE, TensorProto.FLOAT, ("batch", n.num_layers))]
    return inputs, outputs


def _call_inputs(b: _Builder, n: DecoderNumbers, ftype: int):
    """seqlens_k [1] int32, total_sequence_length (scalar int32), coef [L, 1, H, 1, T] in the graph's float."""
    ones = b.op("ReduceSum", ["attention_mask", b.const([1])], keepdims=0)                    # [1]
    seqlens = b.op("Cast", [b.op("Sub", [ones, b.const(1)])], to=TensorProto.INT32)           # [1]
    length = b.op("Gather", [b.op("Shape", ["attention_mask"]), b.const(1)], axis=0)          # scalar
    total = b.op("Cast", [length], to=TensorProto.INT32)
    minus_one = b.op("Sub", [IMAGE_ATTENTION_SCALE, b.const(1.0, np.float32)])               # [1, L, H]
    per_layer = b.op("Unsqueeze", [b.op("Transpose", [minus_one], perm=[1, 0, 2]), b.const([3, 4])])  # [L,1,H,1,1]
    is_image = b.op("Cast", [IMAGE_TOKEN_MASK], to=TensorProto.FLOAT)                         # [1, T]
    is_image = b.op("Unsqueeze", [is_image, b.const([0, 1, 2])])                              # [1,1,1,1,T]
    coef = b.op("Mul", [per_layer, is_image])                                                 # [L,1,H,1,T]
    if ftype != TensorProto.FLOAT:
        coef = b.op("Cast", [coef], to=ftype)
    return seqlens, total, coef


def attention_op(n: DecoderNumbers) -> str:
    """GroupQueryAttention (flash kernels on CUDA) wants a head size that is a multiple of 8;
    a multi-head decoder with another head size gets MultiHeadAttention (causal, the same bias)."""
    if n.head_dim % 8 == 0:
        return "GroupQueryAttention"
    if n.num_heads == n.num_kv_heads:
        return "MultiHeadAttention"
    raise UnsupportedDecoderError(f"grouped-query attention with head size {n.head_dim} (not a multiple of 8): "
                                  f"ONNX Runtime's GroupQueryAttention does not take it")


def _layer(b: _Builder, n: DecoderNumbers, l: int, w, x: str, residual: str | None, seqlens, total, coef, cos, sin):
    H, KV, D = n.num_heads, n.num_kv_heads, n.head_dim
    G = H // KV
    eps = n.rms_eps
    if residual is None:        # layer 0: x is the embeddings, the residual stream itself
        h = b.op("SimplifiedLayerNormalization", [x, b.weight(f"l{l}.input_norm", w.input_norm)],
                 axis=-1, epsilon=eps, stash_type=1)
        residual = x
    else:                       # x: the previous MLP's output; residual += x, then the norm
        h, _, _, residual = b.op("SkipSimplifiedLayerNormalization",
                                 [x, residual, b.weight(f"l{l}.input_norm", w.input_norm)], 4, domain=MS, epsilon=eps)
    qkv = b.op("MatMul", [h, b.weight(f"l{l}.qkv", w.qkv)])                                  # [1, S, (H+2KV) D]
    q, k, v = b.op("Split", [qkv, b.const([H * D, KV * D, KV * D])], 3, axis=-1)
    q = b.op("RotaryEmbedding", [q, "position_ids", cos, sin], domain=MS, num_heads=H, interleaved=0)
    k = b.op("RotaryEmbedding", [k, "position_ids", cos, sin], domain=MS, num_heads=KV, interleaved=0)
    past_k, past_v = PAST_KEY.format(i=l), PAST_VALUE.format(i=l)
    # the steering bias: the logits of every row of the call against every key
    if G == 1:
        qh = b.op("Transpose", [b.op("Reshape", [q, b.const([0, 0, H, D])])], perm=[0, 2, 1, 3])    # [1, H, S, D]
    else:
        qh = b.op("Reshape", [q, b.const([0, 0, KV, G, D])])                                  # [1, S, KV, G, D]
        qh = b.op("Transpose", [qh], perm=[0, 2, 3, 1, 4])                                    # [1, KV, G, S, D]
        qh = b.op("Reshape", [qh, b.const([0, KV, -1, D])])                                   # [1, KV, G*S, D]
    kh = b.op("Transpose", [b.op("Reshape", [k, b.const([0, 0, KV, D])])], perm=[0, 2, 1, 3])       # [1, KV, S, D]
    keys = b.op("Concat", [past_k, kh], axis=2)                                               # [1, KV, T, D]
    s = b.op("FusedMatMul", [qh, keys], domain=MS, transB=1, alpha=float(1 / np.sqrt(D)))     # [1, KV, G*S, T]
    if G > 1:
        s = b.op("Reshape", [s, b.const([0, H, -1, 0])])                                      # [1, H, S, T]
    bias = b.op("Mul", [s, b.op("Gather", [coef, b.const(l)], axis=0)])                       # [1, H, S, T]
    attn_out = [f"attn_{l}", PRESENT_KEY.format(i=l), PRESENT_VALUE.format(i=l)]
    if attention_op(n) == "GroupQueryAttention":
        attn, _, _ = b.op("GroupQueryAttention", [q, k, v, past_k, past_v, seqlens, total, "", "", "", bias],
                          attn_out, domain=MS, num_heads=H, kv_num_heads=KV)                # [1, S, H D]
    else:
        attn, _, _ = b.op("MultiHeadAttention", [q, k, v, "", "", bias, past_k, past_v], attn_out, domain=MS,
                          num_heads=H, unidirectional=1)                                    # [1, S, H D]
    o = b.op("MatMul", [attn, b.weight(f"l{l}.o", w.o)])                                      # [1, S, C]
    h2, _, _, residual = b.op("SkipSimplifiedLayerNormalization", [o, residual, b.weight(f"l{l}.post_norm", w.post_norm)],
                              4, domain=MS, epsilon=eps)
    gate, up = b.op("Split", [b.op("MatMul", [h2, b.weight(f"l{l}.gate_up", w.gate_up)]),
                              b.const([n.intermediate, n.intermediate])], 2, axis=-1)         # [1, S, I] each
    act = b.op("Mul", [b.op("QuickGelu", [gate], domain=MS, alpha=1.0), up])                 # SiLU(g) * u
    mlp = b.op("MatMul", [act, b.weight(f"l{l}.down", w.down)])                               # [1, S, C]
    # the call's last row: softmax over its steered logits, mean over heads
    last = b.op("Slice", [b.op("Add", [s, bias]), b.const([-1]), b.const([_INT_MAX]), b.const([2])])  # [1,H,1,T]
    row = b.op("ReduceMean", [b.op("Softmax", [last], axis=-1), b.const([1])], keepdims=0)   # [1, 1, T]
    return mlp, residual, row


def _head(b: _Builder, n: DecoderNumbers, source: CheckpointDecoder, x, residual, rows, ftype):
    final, _, _, _ = b.op("SkipSimplifiedLayerNormalization", [x, residual, b.weight("final_norm", source.final_norm())],
                          4, domain=MS, epsilon=n.rms_eps)                                    # [1, S, C]
    last = b.op("Slice", [final, b.const([-1]), b.const([_INT_MAX]), b.const([1])])           # [1, 1, C]
    logits = b.op("MatMul", [last, b.weight("lm_head", source.lm_head_weight())])             # [1, 1, V]
    if ftype != TensorProto.FLOAT:
        logits = b.op("Cast", [logits], to=TensorProto.FLOAT)
    b.op("Squeeze", [logits, b.const([1])], ["logits"])                                       # [1, V]
    attention = b.op("Concat", rows, axis=1)                                                  # [1, L, T]
    if ftype != TensorProto.FLOAT:
        attention = b.op("Cast", [attention], to=TensorProto.FLOAT)
    b.op("Identity", [attention], [LAST_ROW_ATTENTION])
    is_image = b.op("Cast", [b.op("Unsqueeze", [IMAGE_TOKEN_MASK, b.const([1])])], to=TensorProto.FLOAT)  # [1,1,T]
    b.op("ReduceSum", [b.op("Mul", [LAST_ROW_ATTENTION, is_image]), b.const([2])], [IMAGE_ATTENTION_SHARE],
         keepdims=0)                                                                          # [1, L]
