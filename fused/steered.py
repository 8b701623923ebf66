"""The steered decoder graph: AdaptVis's image-key scaling as an attention bias, and the attention read-outs.

Run only for the rows that are steered (AdaptVis's and ScalingVis's last prompt token, every row
after the image with ``apply_to="after_image"``) or whose attention is asked for; same buffers,
same weights file as the plain graph.  ``attention_mask`` is [1, T]: T = the tokens so far + S.

Once per call:
    seqlens_k, total = T (``builder.call_lengths``);  start [1] = T - S (the tokens so far)
    image_attention_scale [1, L, H], image_token_mask [1, T]
        --> coef [L, 1, H, 1, T] = (alpha - 1) * is_image            (float; alpha 1 -> 0)

Per layer l (28 nodes with grouped-query heads, 26 without):

    x --(Skip)SimplifiedLayerNorm--> h --MatMul qkv--> Split --> q [1,S,H*D], k [1,S,KV*D], v
    q, k --RotaryEmbedding(start)--> q', k'                    (positions start + i)
    steering bias (additive: alpha (q.k)/sqrt(d) = (q.k)/sqrt(d) + (alpha-1)(q.k)/sqrt(d)):
        q' -> [1, KV, G*S, D];  K = Concat(past_key[:, :, :start], k' as [1, KV, S, D])      [1, KV, T, D]
        s = FusedMatMul(q', K^T, alpha = 1/sqrt(d)) -> [1, H, S, T]                          the row logits
        bias = s * coef[l]                                                                   [1, H, S, T]
    GroupQueryAttention(q', k', v, past = present = the layer's buffers, seqlens_k, T, attention_bias=bias)
        --> attn [1, S, H*D]    (causal; k', v written into the buffers at [start, T))
    attn --MatMul o--> --SkipSimplifiedLayerNorm(+x)--> MLP (as the plain graph)
    attention row: Softmax((s + bias)[:, :, -1]) mean over heads --> [1, 1, T]   (the call's last row)

Then the logits as the plain graph; the rows concatenated -> last_row_attention [1, L, T] float32,
summed over image keys -> image_attention_share [1, L].  The causal mask is GroupQueryAttention's
own, applied after the bias, as the paper has it.
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from graphs.contracts import (IMAGE_ATTENTION_SCALE, IMAGE_ATTENTION_SHARE, IMAGE_TOKEN_MASK, LAST_ROW_ATTENTION,
                              PAST_KEY, PAST_VALUE, PRESENT_KEY, PRESENT_VALUE)

from .builder import INT_MAX, MS, GraphBuilder, attention_out_and_mlp, call_lengths, head, input_norm, kv_io


class SteeredGraph:
    def __init__(self, b: GraphBuilder, n, ftype: int, cos, sin):
        self.b, self.n, self.ftype = b, n, ftype
        self.seqlens, self.total, tokens = call_lengths(b)
        rows = b.op("Slice", [b.op("Shape", ["inputs_embeds"]), b.const([1]), b.const([2])])  # [1]: S
        self.start = b.op("Sub", [tokens, rows])                                               # [1]: T - S
        self.coef = _coef(b, ftype)                                                            # [L,1,H,1,T]
        self.cos, self.sin = b.weight("rotary_cos", cos), b.weight("rotary_sin", sin)         # [P, D/2]
        self.x, self.residual, self.rows = "inputs_embeds", None, []
        self.first_layer_node = len(b.nodes)

    def layer(self, l: int, w) -> None:
        b, n = self.b, self.n
        H, KV, D = n.num_heads, n.num_kv_heads, n.head_dim
        G = H // KV
        h, residual = input_norm(b, l, w, self.x, self.residual, n.rms_eps)
        qkv = b.op("MatMul", [h, b.weight(f"l{l}.qkv", w.qkv)])                               # [1, S, (H+2KV) D]
        q, k, v = b.op("Split", [qkv, b.const([H * D, KV * D, KV * D])], 3, axis=-1)
        q = b.op("RotaryEmbedding", [q, self.start, self.cos, self.sin], domain=MS, num_heads=H, interleaved=0)
        k = b.op("RotaryEmbedding", [k, self.start, self.cos, self.sin], domain=MS, num_heads=KV, interleaved=0)
        past_k, past_v = PAST_KEY.format(i=l), PAST_VALUE.format(i=l)
        # the steering bias: the logits of every row of the call against every key
        if G == 1:
            qh = b.op("Transpose", [b.op("Reshape", [q, b.const([0, 0, H, D])])], perm=[0, 2, 1, 3])  # [1, H, S, D]
        else:
            qh = b.op("Reshape", [q, b.const([0, 0, KV, G, D])])                             # [1, S, KV, G, D]
            qh = b.op("Transpose", [qh], perm=[0, 2, 3, 1, 4])                               # [1, KV, G, S, D]
            qh = b.op("Reshape", [qh, b.const([0, KV, -1, D])])                              # [1, KV, G*S, D]
        kh = b.op("Transpose", [b.op("Reshape", [k, b.const([0, 0, KV, D])])], perm=[0, 2, 1, 3])      # [1, KV, S, D]
        before = b.op("Slice", [past_k, b.const([0]), self.start, b.const([2])])             # [1, KV, T-S, D]
        keys = b.op("Concat", [before, kh], axis=2)                                          # [1, KV, T, D]
        s = b.op("FusedMatMul", [qh, keys], domain=MS, transB=1, alpha=float(1 / np.sqrt(D)))  # [1, KV, G*S, T]
        if G > 1:
            s = b.op("Reshape", [s, b.const([0, H, -1, 0])])                                 # [1, H, S, T]
        bias = b.op("Mul", [s, b.op("Gather", [self.coef, b.const(l)], axis=0)])             # [1, H, S, T]
        attn, _, _ = b.op("GroupQueryAttention", [q, k, v, past_k, past_v, self.seqlens, self.total, "", "", "", bias],
                          [f"attn_{l}", PRESENT_KEY.format(i=l), PRESENT_VALUE.format(i=l)], domain=MS,
                          num_heads=H, kv_num_heads=KV)                                      # [1, S, H D]
        self.x, self.residual = attention_out_and_mlp(b, n, l, w, attn, residual)
        # the call's last row: softmax over its steered logits, mean over heads
        last = b.op("Slice", [b.op("Add", [s, bias]), b.const([-1]), b.const([INT_MAX]), b.const([2])])  # [1,H,1,T]
        self.rows.append(b.op("ReduceMean", [b.op("Softmax", [last], axis=-1), b.const([1])], keepdims=0))  # [1,1,T]

    def finish(self, path, final_norm, lm_head) -> float:
        """Write the graph; returns its nodes per layer."""
        b, n, ftype = self.b, self.n, self.ftype
        per_layer = (len(b.nodes) - self.first_layer_node) / n.num_layers
        head(b, n, final_norm, lm_head, self.x, self.residual, ftype)
        attention = b.op("Concat", self.rows, axis=1)                                         # [1, L, T]
        if ftype != TensorProto.FLOAT:
            attention = b.op("Cast", [attention], to=TensorProto.FLOAT)
        b.op("Identity", [attention], [LAST_ROW_ATTENTION])
        is_image = b.op("Cast", [b.op("Unsqueeze", [IMAGE_TOKEN_MASK, b.const([1])])], to=TensorProto.FLOAT)  # [1,1,T]
        b.op("ReduceSum", [b.op("Mul", [LAST_ROW_ATTENTION, is_image]), b.const([2])], [IMAGE_ATTENTION_SHARE],
             keepdims=0)                                                                      # [1, L]
        past, present = kv_io(n, ftype, PAST_KEY, PAST_VALUE, PRESENT_KEY, PRESENT_VALUE)
        inputs = [helper.make_tensor_value_info("inputs_embeds", ftype, ("batch", "sequence", n.hidden)),
                  helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ("batch", "total_sequence")),
                  *past,
                  helper.make_tensor_value_info(IMAGE_ATTENTION_SCALE, TensorProto.FLOAT,
                                                ("batch", n.num_layers, n.num_heads)),
                  helper.make_tensor_value_info(IMAGE_TOKEN_MASK, TensorProto.BOOL, ("batch", "total_sequence"))]
        outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ("batch", n.vocab)), *present,
                   helper.make_tensor_value_info(LAST_ROW_ATTENTION, TensorProto.FLOAT,
                                                 ("batch", n.num_layers, "total_sequence")),
                   helper.make_tensor_value_info(IMAGE_ATTENTION_SHARE, TensorProto.FLOAT, ("batch", n.num_layers))]
        b.save(path, "steered_decoder", inputs, outputs, "adaptvis-edge fused steered")
        return per_layer


def _coef(b: GraphBuilder, ftype: int) -> str:
    """coef [L, 1, H, 1, T] = (alpha - 1) * is_image, in the graph's float type."""
    minus_one = b.op("Sub", [IMAGE_ATTENTION_SCALE, b.const(1.0, np.float32)])               # [1, L, H]
    per_layer = b.op("Unsqueeze", [b.op("Transpose", [minus_one], perm=[1, 0, 2]), b.const([3, 4])])  # [L,1,H,1,1]
    is_image = b.op("Cast", [IMAGE_TOKEN_MASK], to=TensorProto.FLOAT)                         # [1, T]
    is_image = b.op("Unsqueeze", [is_image, b.const([0, 1, 2])])                              # [1,1,1,1,T]
    coef = b.op("Mul", [per_layer, is_image])                                                 # [L,1,H,1,T]
    return coef if ftype == TensorProto.FLOAT else b.op("Cast", [coef], to=ftype)
