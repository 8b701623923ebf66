"""The plain decoder graph: no steering, no read-outs; the unsteered prompt and every decode step.

Once per call: seqlens_k, total_sequence_length from ``attention_mask`` (``builder.call_lengths``).
Per layer l (10 nodes; x: the residual stream [1, S, C]):

    x --(Skip)SimplifiedLayerNorm--> h --MatMul qkv--> qkv [1, S, (H + 2 KV) D]
    GroupQueryAttention(qkv packed, past = present = the layer's buffers, seqlens_k, total,
                        cos/sin tables, do_rotary)           rotary, causal attention, K/V written in place
        --> attn [1, S, H D]
    attn --MatMul o--> --SkipSimplifiedLayerNorm(+x)--> --MatMul gate_up--> Split --> SiLU(g) * u --MatMul down-->

Then the final norm and the last position's logits.  Rotary positions are GroupQueryAttention's
own: the tokens so far + i, which is the LLaVA prompt's position ids.
"""
from __future__ import annotations

from onnx import TensorProto, helper

from graphs.contracts import PAST_KEY, PAST_VALUE, PRESENT_KEY, PRESENT_VALUE

from .builder import MS, GraphBuilder, attention_out_and_mlp, call_lengths, head, input_norm, kv_io


class PlainGraph:
    def __init__(self, b: GraphBuilder, n, ftype: int, cos, sin):
        self.b, self.n, self.ftype = b, n, ftype
        self.seqlens, self.total, _ = call_lengths(b)
        self.cos, self.sin = b.weight("rotary_cos", cos), b.weight("rotary_sin", sin)      # [P, D/2]
        self.x, self.residual = "inputs_embeds", None
        self.first_layer_node = len(b.nodes)

    def layer(self, l: int, w) -> None:
        b, n = self.b, self.n
        h, residual = input_norm(b, l, w, self.x, self.residual, n.rms_eps)
        qkv = b.op("MatMul", [h, b.weight(f"l{l}.qkv", w.qkv)])                            # [1, S, (H+2KV) D]
        attn, _, _ = b.op("GroupQueryAttention",
                          [qkv, "", "", PAST_KEY.format(i=l), PAST_VALUE.format(i=l), self.seqlens, self.total,
                           self.cos, self.sin],
                          [f"attn_{l}", PRESENT_KEY.format(i=l), PRESENT_VALUE.format(i=l)], domain=MS,
                          num_heads=n.num_heads, kv_num_heads=n.num_kv_heads, do_rotary=1, rotary_interleaved=0)
        self.x, self.residual = attention_out_and_mlp(b, n, l, w, attn, residual)

    def finish(self, path, final_norm, lm_head) -> float:
        """Write the graph; returns its nodes per layer."""
        b, n = self.b, self.n
        per_layer = (len(b.nodes) - self.first_layer_node) / n.num_layers
        head(b, n, final_norm, lm_head, self.x, self.residual, self.ftype)
        past, present = kv_io(n, self.ftype, PAST_KEY, PAST_VALUE, PRESENT_KEY, PRESENT_VALUE)
        inputs = [helper.make_tensor_value_info("inputs_embeds", self.ftype, ("batch", "sequence", n.hidden)),
                  helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ("batch", "mask_length")),
                  *past]
        outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ("batch", n.vocab)), *present]
        b.save(path, "plain_decoder", inputs, outputs, "adaptvis-edge fused plain")
        return per_layer
