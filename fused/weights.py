"""The Llama decoder's weights and numbers, read from a LLaVA checkpoint, laid out for the fused graph.

    q_proj [H*D, C], k_proj [KV*D, C], v_proj [KV*D, C] --> qkv   [C, (H + 2 KV) D]
    o_proj [C, H*D]                                     --> o     [H*D, C]
    gate_proj [I, C], up_proj [I, C]                    --> gate_up [C, 2 I]
    down_proj [C, I]                                    --> down  [I, C]
    lm_head [V, C]                                      --> lm_head [C, V]

(MatMul takes [in, out]: the transposes are folded here, once.)  Rotary: cos/sin tables
[max_positions, D/2], computed in float64 with transformers' own rope initialisation (any rope
type it knows), times its attention scaling, then rounded to the graph's dtype.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import UnsupportedDecoderError


@dataclass(frozen=True)
class DecoderNumbers:
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden: int
    intermediate: int
    vocab: int
    max_positions: int
    rms_eps: float


@dataclass(frozen=True)
class LayerWeights:
    input_norm: np.ndarray      # [C]
    qkv: np.ndarray             # [C, (H + 2 KV) D]
    o: np.ndarray               # [H D, C]
    post_norm: np.ndarray       # [C]
    gate_up: np.ndarray         # [C, 2 I]
    down: np.ndarray            # [I, C]


class CheckpointDecoder:
    """Loads the checkpoint once (memory-mapped, in ``torch_dtype``); hands out numpy arrays in ``dtype``."""

    def __init__(self, folder: str | Path, dtype: np.dtype):
        import torch
        from transformers import LlavaForConditionalGeneration

        load_dtype = torch.float16 if dtype == np.float16 else torch.float32
        llava = LlavaForConditionalGeneration.from_pretrained(Path(folder), dtype=load_dtype,
                                                              low_cpu_mem_usage=True).eval()
        self.config = llava.config.text_config
        self.text = llava.model.language_model
        self.lm_head = llava.lm_head
        self.dtype = np.dtype(dtype)
        self.numbers = _numbers(self.config)

    def _np(self, t) -> np.ndarray:
        return t.detach().float().numpy().astype(self.dtype)

    def layers(self) -> Iterator[LayerWeights]:
        for layer in self.text.layers:
            a, m = layer.self_attn, layer.mlp
            yield LayerWeights(
                input_norm=self._np(layer.input_layernorm.weight),
                qkv=np.concatenate([self._np(a.q_proj.weight).T, self._np(a.k_proj.weight).T,
                                    self._np(a.v_proj.weight).T], axis=1),
                o=self._np(a.o_proj.weight).T,
                post_norm=self._np(layer.post_attention_layernorm.weight),
                gate_up=np.concatenate([self._np(m.gate_proj.weight).T, self._np(m.up_proj.weight).T], axis=1),
                down=self._np(m.down_proj.weight).T)

    def final_norm(self) -> np.ndarray:
        return self._np(self.text.norm.weight)                                  # [C]

    def lm_head_weight(self) -> np.ndarray:
        return self._np(self.lm_head.weight).T                                  # [C, V]

    def rotary(self) -> tuple[np.ndarray, np.ndarray]:
        """cos, sin [max_positions, D/2] in the graph's dtype."""
        from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

        cfg = self.config
        rope = (getattr(cfg, "rope_scaling", None) or {}).get("rope_type", "default")
        if rope == "default":
            base = getattr(cfg, "rope_theta", 10000.0)
            d = self.numbers.head_dim
            inv_freq, scaling = 1.0 / base ** (np.arange(0, d, 2, dtype=np.float64) / d), 1.0
        else:
            inv, scaling = ROPE_INIT_FUNCTIONS[rope](cfg, "cpu")
            inv_freq = inv.double().numpy()
        angles = np.arange(self.numbers.max_positions, dtype=np.float64)[:, None] * inv_freq[None]  # [P, D/2]
        return ((np.cos(angles) * scaling).astype(self.dtype), (np.sin(angles) * scaling).astype(self.dtype))


def _numbers(cfg) -> DecoderNumbers:
    if getattr(cfg, "hidden_act", "silu") != "silu":
        raise UnsupportedDecoderError(f"the fused decoder builds a SiLU MLP; this decoder uses {cfg.hidden_act!r}")
    for flag in ("attention_bias", "mlp_bias"):
        if getattr(cfg, flag, False):
            raise UnsupportedDecoderError(f"the fused decoder builds projections without biases; this decoder has {flag}")
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    return DecoderNumbers(cfg.num_hidden_layers, heads, cfg.num_key_value_heads, head_dim, cfg.hidden_size,
                          cfg.intermediate_size, cfg.vocab_size, cfg.max_position_embeddings, float(cfg.rms_norm_eps))
