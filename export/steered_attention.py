"""Eager attention with AdaptVis's image-key temperature, registered with transformers.

    s = Q K^T / sqrt(d)                      # [B, H, S, K] pre-softmax logits
    s[b, h, :, j] *= alpha[b, layer, h]      # for every key j with image_token_mask[b, j]
    p = softmax(s + additive_mask)           # mask added after scaling (see docs/adaptvis.md)

Registered under ``ATTENTION_NAME`` in transformers' attention registry, with
an eager mask function under the same name (without it the causal mask
silently disappears).  Set it on the sub-configs (text, and vision for its
fp32 softmax), never on the top-level LLaVA config.  The two extra tensors arrive as forward keyword arguments
``image_attention_scale`` [B, L, H] (float32) and ``image_token_mask`` [B, K] (bool).

A third keyword argument, ``attention_rows`` (a list, passed by ``SteeredDecoder``),
collects the decoder's attention output: each call appends, for its layer, the
last query row of ``p`` averaged over heads, ``p[:, :, -1, :].mean(heads)``
[B, K] float32 (sliced from the fp32 softmax before any cast back to fp16).
Only that row is reduced: the cost is one [B, H, K] slice and a mean per layer.
"""
from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask
from transformers.models.llama.modeling_llama import repeat_kv

ATTENTION_NAME = "adaptvis_eager"


def steered_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                      value: torch.Tensor, attention_mask: torch.Tensor | None, scaling: float,
                      dropout: float = 0.0, image_attention_scale: torch.Tensor | None = None,
                      image_token_mask: torch.Tensor | None = None, attention_rows: list | None = None,
                      **kwargs):
    # query: [B, H, S, D]; key/value: [B, KV, K, D]; attention_mask: [B, 1, S, K] additive
    groups = getattr(module, "num_key_value_groups", 1)             # CLIP's attention has no GQA
    key_states = repeat_kv(key, groups)                             # [B, H, K, D]
    value_states = repeat_kv(value, groups)                         # [B, H, K, D]
    scores = torch.matmul(query, key_states.transpose(2, 3)) * scaling  # [B, H, S, K]
    if image_attention_scale is not None and image_token_mask is not None:
        alpha = image_attention_scale[:, module.layer_idx].to(scores.dtype)   # [B, H]
        is_image = image_token_mask[:, None, None, : scores.shape[-1]]          # [B, 1, 1, K]
        one = torch.ones((), dtype=scores.dtype, device=scores.device)
        scores = scores * torch.where(is_image, alpha[:, :, None, None], one)   # [B, H, S, K]
    # Softmax and mask in fp32: in an fp16 graph, exp() of large logits overflows.
    scores = scores.float()
    if attention_mask is not None:
        scores = scores + attention_mask[:, :, :, : key_states.shape[-2]].float()
    probs = torch.softmax(scores, dim=-1)                          # [B, H, S, K] float32
    if attention_rows is not None:
        attention_rows.append(probs[:, :, -1, :].mean(dim=1))       # [B, K] float32: the last row, mean over heads
    probs = probs.to(query.dtype)
    out = torch.matmul(probs, value_states)                         # [B, H, S, D]
    return out.transpose(1, 2).contiguous(), probs                  # [B, S, H, D]


def register() -> str:
    """Idempotently register the attention and its mask; returns the implementation name."""
    AttentionInterface.register(ATTENTION_NAME, steered_attention)
    AttentionMaskInterface.register(ATTENTION_NAME, eager_mask)
    return ATTENTION_NAME
