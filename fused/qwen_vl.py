"""The fused decoder pair for Qwen2.5-VL and Qwen3-VL: the LLaVA pair's builder, with M-RoPE, QK-norm and DeepStack.

    model (transformers, in memory) --QwenDecoderWeights (one layer at a time)--+--> QwenPlainGraph   decoder_plain_fp32.onnx
                                                                                +--> QwenSteeredGraph decoder_steered_fp32.onnx
                                                      every weight written once --> decoder_fused_fp32.onnx_data

Inputs (both graphs): inputs_embeds [1, S, C], attention_mask [1, M] (ones for the tokens so far and this
call's), position_ids [3, 1, S] (M-RoPE: temporal, height, width), the shared KV buffers
past_key_values.{l}.* = present.{l}.* [1, KV, capacity, D], (Qwen3-VL) deepstack_embeds [D, 1, S, C];
the steered graph also image_attention_scale [1, L, H] and image_token_mask [1, M].

M-RoPE, once per call (shared by every layer of the graph):

    position_ids [3, 1, S] --Gather(axis of each frequency)--> [F, 1, S] --> angles [S, F] = pos * inv_freq
        --Cos / Sin--> [S, F] --Pad(start rows before, M - tokens after)--> cos, sin [M, F]

    (F = D / 2; the axis of each frequency: chunked sections for Qwen2.5-VL, interleaved for Qwen3-VL,
    ``runtime.qwen_vl.rope.axis_of_frequency``.)  Row p of the padded table holds the angles of the token
    at cache position p in this call, so GroupQueryAttention's own rotary (``do_rotary``, which indexes its
    cos/sin cache by the cache position: tokens so far + i) applies M-RoPE unchanged.  Why not its
    ``position_ids`` input: it takes one position per token ([B, S]), not three, so it cannot express
    M-RoPE; and it still refuses a cos cache shorter than total_sequence_length (checked on ONNX Runtime
    1.32 CPU), so a per-call table [S, F] indexed 0..S-1 fails on any call after the first.  The padded
    per-call table costs M x F floats per call (the rows before ``start`` are zeros, never read).

Per layer (plain): (Skip)SimplifiedLayerNorm, MatMul qkv, (Qwen2.5-VL) Add qkv bias, (Qwen3-VL) Split and
QK-norm (Reshape, SimplifiedLayerNormalization over the head, Reshape, for q and k), GroupQueryAttention
with rotary inside, then o, SkipSimplifiedLayerNorm and the SiLU MLP as LLaVA's; (Qwen3-VL, the first D
layers) + deepstack_embeds[l].  Steered: as LLaVA's steered graph (RotaryEmbedding outside attention, from
the same padded cos/sin with position offset ``start``, the AdaptVis bias on image keys, read-outs).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from onnx import TensorProto, helper

from graphs.contracts import (IMAGE_ATTENTION_SCALE, IMAGE_ATTENTION_SHARE, IMAGE_TOKEN_MASK, LAST_ROW_ATTENTION,
                              PAST_KEY, PAST_VALUE, PRESENT_KEY, PRESENT_VALUE)
from runtime.qwen_vl.rope import axis_of_frequency

from .builder import INT_MAX, MS, GraphBuilder, attention_out_and_mlp, call_lengths, head, input_norm, kv_io
from .errors import UnsupportedDecoderError
from .external import ExternalWeights
from .graph import ATTENTION_OP, check_supported, fused_files
from .steered import _coef
from .weights import DecoderNumbers

POSITION_IDS = "position_ids"
DEEPSTACK_EMBEDS = "deepstack_embeds"


@dataclass(frozen=True)
class QwenRope:
    axis: np.ndarray            # int64 [F]: 0 t, 1 h, 2 w for each frequency
    inv_freq: np.ndarray        # float32 [F]
    scaling: float              # transformers' attention_scaling (1 for the default rope)


@dataclass(frozen=True)
class QwenLayerWeights:
    input_norm: np.ndarray      # [C]
    qkv: np.ndarray             # [C, (H + 2 KV) D]
    qkv_bias: np.ndarray | None     # [(H + 2 KV) D] (Qwen2.5-VL)
    q_norm: np.ndarray | None       # [D] (Qwen3-VL)
    k_norm: np.ndarray | None       # [D]
    o: np.ndarray               # [H D, C]
    post_norm: np.ndarray       # [C]
    gate_up: np.ndarray         # [C, 2 I]
    down: np.ndarray            # [I, C]


class QwenDecoderWeights:
    """The text decoder of a loaded ``Qwen2_5_VLForConditionalGeneration`` / ``Qwen3VLForConditionalGeneration``."""

    def __init__(self, model, dtype=np.float32):
        self.text = model.model.language_model
        self.lm_head = model.lm_head
        cfg = self.config = model.config.text_config
        self.dtype = np.dtype(dtype)
        if getattr(cfg, "hidden_act", "silu") != "silu":
            raise UnsupportedDecoderError(f"the fused decoder builds a SiLU MLP; this decoder uses {cfg.hidden_act!r}")
        heads = cfg.num_attention_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
        self.numbers = DecoderNumbers(cfg.num_hidden_layers, heads, cfg.num_key_value_heads, head_dim,
                                      cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size,
                                      cfg.max_position_embeddings, float(cfg.rms_norm_eps))
        self.deepstack = len(getattr(model.config.vision_config, "deepstack_visual_indexes", None) or [])
        rope = getattr(cfg, "rope_scaling", None) or {}
        interleaved = bool(rope.get("mrope_interleaved", False))
        rotary = self.text.rotary_emb
        self.rope = QwenRope(axis_of_frequency(rope["mrope_section"], interleaved),
                             rotary.inv_freq.detach().float().numpy().astype(np.float32),
                             float(getattr(rotary, "attention_scaling", 1.0)))

    def _np(self, t) -> np.ndarray:
        return t.detach().float().numpy().astype(self.dtype)

    def layers(self) -> Iterator[QwenLayerWeights]:
        for layer in self.text.layers:
            a, m = layer.self_attn, layer.mlp
            projections = (a.q_proj, a.k_proj, a.v_proj)
            bias = None
            if any(p.bias is not None for p in projections):
                bias = np.concatenate([self._np(p.bias) for p in projections])
            q_norm = self._np(a.q_norm.weight) if hasattr(a, "q_norm") else None
            k_norm = self._np(a.k_norm.weight) if hasattr(a, "k_norm") else None
            if getattr(a.o_proj, "bias", None) is not None:
                raise UnsupportedDecoderError("the fused decoder builds an o projection without a bias")
            yield QwenLayerWeights(
                input_norm=self._np(layer.input_layernorm.weight),
                qkv=np.concatenate([self._np(p.weight).T for p in projections], axis=1), qkv_bias=bias,
                q_norm=q_norm, k_norm=k_norm, o=self._np(a.o_proj.weight).T,
                post_norm=self._np(layer.post_attention_layernorm.weight),
                gate_up=np.concatenate([self._np(m.gate_proj.weight).T, self._np(m.up_proj.weight).T], axis=1),
                down=self._np(m.down_proj.weight).T)

    def final_norm(self) -> np.ndarray:
        return self._np(self.text.norm.weight)

    def lm_head_weight(self) -> np.ndarray:
        return self._np(self.lm_head.weight).T                                  # [C, V]


def mrope_tables(b: GraphBuilder, rope: QwenRope, tokens: str, rows: str) -> tuple[str, str, str]:
    """(cos, sin [M, F] in cache-position order, start [1]): once per call; see the module's docstring."""
    chosen = b.op("Gather", [POSITION_IDS, b.const(rope.axis)], axis=0)                    # [F, 1, S]
    chosen = b.op("Squeeze", [chosen, b.const([1])])                                      # [F, S]   (batch 1)
    angles = b.op("Mul", [b.op("Cast", [b.op("Transpose", [chosen], perm=[1, 0])], to=TensorProto.FLOAT),
                          b.const(rope.inv_freq, np.float32)])                            # [S, F]
    start = b.op("Sub", [tokens, rows])                                                   # [1]: tokens so far
    length = b.op("Slice", [b.op("Shape", ["attention_mask"]), b.const([1]), b.const([2])])   # [1]: M
    after = b.op("Sub", [length, tokens])                                                  # [1]: M - tokens
    zero = b.const([0])
    pads = b.op("Concat", [start, zero, after, zero], axis=0)                              # [4]
    tables = []
    for fn in ("Cos", "Sin"):
        t = b.op(fn, [angles])
        if rope.scaling != 1.0:
            t = b.op("Mul", [t, b.const(rope.scaling, np.float32)])
        tables.append(b.op("Pad", [t, pads]))                                              # [M, F]
    return tables[0], tables[1], start


class _QwenGraph:
    """What the two graphs share: the call's lengths, the M-RoPE tables, q/k/v with bias or QK-norm, DeepStack."""

    def __init__(self, b: GraphBuilder, n: DecoderNumbers, rope: QwenRope, deepstack: int):
        self.b, self.n, self.deepstack = b, n, deepstack
        self.seqlens, self.total, tokens = call_lengths(b)
        self.rows = b.op("Slice", [b.op("Shape", ["inputs_embeds"]), b.const([1]), b.const([2])])   # [1]: S
        self.cos, self.sin, self.start = mrope_tables(b, rope, tokens, self.rows)
        self.x, self.residual = "inputs_embeds", None
        self.first_layer_node = len(b.nodes)

    def _qkv(self, l: int, w: QwenLayerWeights, h: str):
        b, n = self.b, self.n
        qkv = b.op("MatMul", [h, b.weight(f"l{l}.qkv", w.qkv)])                              # [1, S, (H+2KV) D]
        if w.qkv_bias is not None:
            qkv = b.op("Add", [qkv, b.weight(f"l{l}.qkv_bias", w.qkv_bias)])
        return qkv

    def _split_norm(self, l: int, w: QwenLayerWeights, qkv: str) -> tuple[str, str, str]:
        """q [1, S, H D], k, v [1, S, KV D]; QK-norm (RMS over each head) where the model has it."""
        b, n = self.b, self.n
        H, KV, D = n.num_heads, n.num_kv_heads, n.head_dim
        q, k, v = b.op("Split", [qkv, b.const([H * D, KV * D, KV * D])], 3, axis=-1)
        if w.q_norm is not None:
            q = self._head_norm(q, b.weight(f"l{l}.q_norm", w.q_norm), H)
            k = self._head_norm(k, b.weight(f"l{l}.k_norm", w.k_norm), KV)
        return q, k, v

    def _head_norm(self, x: str, weight: str, heads: int) -> str:
        b, n = self.b, self.n
        per_head = b.op("Reshape", [x, b.const([0, 0, heads, n.head_dim])])                   # [1, S, h, D]
        normed = b.op("SimplifiedLayerNormalization", [per_head, weight], axis=-1, epsilon=n.rms_eps, stash_type=1)
        return b.op("Reshape", [normed, b.const([0, 0, heads * n.head_dim])])                 # [1, S, h D]

    def _after_layer(self, l: int) -> None:
        """DeepStack: the image rows' features added to the hidden states after each of the first D layers
        (added to the MLP's output: the next SkipSimplifiedLayerNorm adds the residual stream)."""
        if l < self.deepstack:
            b = self.b
            row = b.op("Gather", [DEEPSTACK_EMBEDS, b.const(l)], axis=0)                     # [1, S, C]
            self.x = b.op("Add", [self.x, row])

    def _inputs(self, ftype: int, mask_dim: str) -> list:
        n = self.n
        inputs = [helper.make_tensor_value_info("inputs_embeds", ftype, ("batch", "sequence", n.hidden)),
                  helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ("batch", mask_dim)),
                  helper.make_tensor_value_info(POSITION_IDS, TensorProto.INT64, (3, "batch", "sequence"))]
        if self.deepstack:
            inputs.append(helper.make_tensor_value_info(DEEPSTACK_EMBEDS, ftype,
                                                        (self.deepstack, "batch", "sequence", n.hidden)))
        return inputs


class QwenPlainGraph(_QwenGraph):
    def layer(self, l: int, w: QwenLayerWeights) -> None:
        b, n = self.b, self.n
        h, residual = input_norm(b, l, w, self.x, self.residual, n.rms_eps)
        qkv = self._qkv(l, w, h)
        if w.q_norm is None:
            q, k, v = qkv, "", ""                                                            # packed
        else:
            q, k, v = self._split_norm(l, w, qkv)
        attn, _, _ = b.op("GroupQueryAttention",
                          [q, k, v, PAST_KEY.format(i=l), PAST_VALUE.format(i=l), self.seqlens, self.total,
                           self.cos, self.sin],
                          [f"attn_{l}", PRESENT_KEY.format(i=l), PRESENT_VALUE.format(i=l)], domain=MS,
                          num_heads=n.num_heads, kv_num_heads=n.num_kv_heads, do_rotary=1, rotary_interleaved=0)
        self.x, self.residual = attention_out_and_mlp(b, n, l, w, attn, residual)
        self._after_layer(l)

    def finish(self, path, final_norm, lm_head, ftype: int) -> float:
        b, n = self.b, self.n
        per_layer = (len(b.nodes) - self.first_layer_node) / n.num_layers
        head(b, n, final_norm, lm_head, self.x, self.residual, ftype)
        past, present = kv_io(n, ftype, PAST_KEY, PAST_VALUE, PRESENT_KEY, PRESENT_VALUE)
        outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ("batch", n.vocab)), *present]
        b.save(path, "qwen_plain_decoder", self._inputs(ftype, "mask_length") + past, outputs,
               "adaptvis-edge fused plain (Qwen-VL)")
        return per_layer


class QwenSteeredGraph(_QwenGraph):
    def __init__(self, b, n, rope, deepstack, ftype: int):
        super().__init__(b, n, rope, deepstack)
        self.coef = _coef(b, ftype)                                                          # [L,1,H,1,T]
        self.read_rows: list[str] = []

    def layer(self, l: int, w: QwenLayerWeights) -> None:
        b, n = self.b, self.n
        H, KV, D = n.num_heads, n.num_kv_heads, n.head_dim
        G = H // KV
        h, residual = input_norm(b, l, w, self.x, self.residual, n.rms_eps)
        q, k, v = self._split_norm(l, w, self._qkv(l, w, h))
        q = b.op("RotaryEmbedding", [q, self.start, self.cos, self.sin], domain=MS, num_heads=H, interleaved=0)
        k = b.op("RotaryEmbedding", [k, self.start, self.cos, self.sin], domain=MS, num_heads=KV, interleaved=0)
        past_k, past_v = PAST_KEY.format(i=l), PAST_VALUE.format(i=l)
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
                          num_heads=H, kv_num_heads=KV)
        self.x, self.residual = attention_out_and_mlp(b, n, l, w, attn, residual)
        self._after_layer(l)
        last = b.op("Slice", [b.op("Add", [s, bias]), b.const([-1]), b.const([INT_MAX]), b.const([2])])  # [1,H,1,T]
        self.read_rows.append(b.op("ReduceMean", [b.op("Softmax", [last], axis=-1), b.const([1])], keepdims=0))

    def finish(self, path, final_norm, lm_head, ftype: int) -> float:
        b, n = self.b, self.n
        per_layer = (len(b.nodes) - self.first_layer_node) / n.num_layers
        head(b, n, final_norm, lm_head, self.x, self.residual, ftype)
        b.op("Identity", [b.op("Concat", self.read_rows, axis=1)], [LAST_ROW_ATTENTION])   # [1, L, T]
        is_image = b.op("Cast", [b.op("Unsqueeze", [IMAGE_TOKEN_MASK, b.const([1])])], to=TensorProto.FLOAT)
        b.op("ReduceSum", [b.op("Mul", [LAST_ROW_ATTENTION, is_image]), b.const([2])], [IMAGE_ATTENTION_SHARE],
             keepdims=0)                                                                      # [1, L]
        past, present = kv_io(n, ftype, PAST_KEY, PAST_VALUE, PRESENT_KEY, PRESENT_VALUE)
        inputs = self._inputs(ftype, "total_sequence") + past + [
            helper.make_tensor_value_info(IMAGE_ATTENTION_SCALE, TensorProto.FLOAT, ("batch", n.num_layers, n.num_heads)),
            helper.make_tensor_value_info(IMAGE_TOKEN_MASK, TensorProto.BOOL, ("batch", "total_sequence"))]
        outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ("batch", n.vocab)), *present,
                   helper.make_tensor_value_info(LAST_ROW_ATTENTION, TensorProto.FLOAT,
                                                 ("batch", n.num_layers, "total_sequence")),
                   helper.make_tensor_value_info(IMAGE_ATTENTION_SHARE, TensorProto.FLOAT, ("batch", n.num_layers))]
        b.save(path, "qwen_steered_decoder", inputs, outputs, "adaptvis-edge fused steered (Qwen-VL)")
        return per_layer


def build_qwen_fused(model, folder: Path, dtype: str = "fp32") -> dict:
    """Write the pair (``fused_files(dtype)``) for a loaded Qwen model into ``folder``; returns
    {"nodes_per_layer", "nodes", "attention_op", "ops", "rotary"}.  fp32 only for now."""
    if dtype != "fp32":
        raise UnsupportedDecoderError(f"the Qwen fused decoder is built in fp32 only for now (asked: {dtype})")
    source = QwenDecoderWeights(model, np.float32)
    n = source.numbers
    check_supported(n)
    ftype = TensorProto.FLOAT
    files = fused_files(dtype)
    weights = ExternalWeights(Path(folder) / files["data"])
    try:
        plain = QwenPlainGraph(GraphBuilder(weights), n, source.rope, source.deepstack)
        steered = QwenSteeredGraph(GraphBuilder(weights), n, source.rope, source.deepstack, ftype)
        for l, layer in enumerate(source.layers()):
            plain.layer(l, layer)
            steered.layer(l, layer)
        final_norm, lm_head = source.final_norm(), source.lm_head_weight()
        per_layer = {"plain": plain.finish(Path(folder) / files["plain"], final_norm, lm_head, ftype),
                     "steered": steered.finish(Path(folder) / files["steered"], final_norm, lm_head, ftype)}
    finally:
        weights.close()
    graphs = {"plain": plain.b, "steered": steered.b}
    return {"nodes_per_layer": per_layer, "nodes": {k: len(b.nodes) for k, b in graphs.items()},
            "attention_op": ATTENTION_OP, "files": files,
            "rotary": "M-RoPE cos/sin once per call from position_ids [3, 1, S], padded to cache positions; "
                      "GroupQueryAttention's own rotary (plain), RotaryEmbedding (steered)",
            "ops": sorted({f"{nd.domain or 'ai.onnx'}.{nd.op_type}" for b in graphs.values() for nd in b.nodes})}
