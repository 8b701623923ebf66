"""Eager attention with AdaptVis's image-key temperature, registered with transformers.

Two forms of the same arithmetic (``ATTENTION_FORMS``), chosen per export:

    scaled-logits (the paper's):
        s = Q K^T / sqrt(d)                      # [B, H, S, K] pre-softmax logits
        s[b, h, :, j] *= alpha[b, layer, h]      # for every key j with image_token_mask[b, j]
        p = softmax(s + additive_mask)           # mask added after scaling (see docs/adaptvis.md)

    scaled-keys (what fused attention kernels can take):
        K'[b, h, j, :] = alpha[b, layer, h] * K[b, h, j, :]   # image keys only; K repeated to H heads
        p = softmax(Q K'^T / sqrt(d) + additive_mask)         # q.(alpha k) = alpha (q.k): the same p

In both the steering multiply runs in float32 (an fp16 export casts to it; the float64 run that
measures the parity tolerance stays in float64), and the cache keeps the
*unscaled* keys: the steering holds for the query rows of the call only, as in the paper.  In the
scaled-keys form the Q K'^T MatMul -> scale -> mask -> softmax -> MatMul chain has nothing
data-dependent inside, and its probabilities feed only the value MatMul: the last row that
``attention_rows`` collects is recomputed apart (one query row against the same K').

Registered under ``ATTENTION_NAME`` in transformers' attention registry, with
an eager mask function under the same name (without it the causal mask
silently disappears).  Set it on the sub-configs (text, and vision for its
fp32 softmax), never on the top-level LLaVA config.  The extra tensors arrive as forward keyword arguments
``image_attention_scale`` [B, L, H] (float32) and ``image_token_mask`` [B, K] (bool), and the form as
``attention_form`` (a string; default scaled-keys: ``graphs.manifest.DEFAULT_ATTENTION_FORM``).

A further keyword argument, ``attention_rows`` (a list, passed by ``SteeredDecoder``),
collects the decoder's attention output: each call appends, for its layer, the
last query row of ``p`` averaged over heads, ``p[:, :, -1, :].mean(heads)``
[B, K] float32 (from the fp32 softmax, before any cast back to fp16).
Only that row is reduced: the cost is one [B, H, K] slice and a mean per layer.
"""
from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask
from transformers.models.llama.modeling_llama import repeat_kv

from graphs.manifest import DEFAULT_ATTENTION_FORM

ATTENTION_NAME = "adaptvis_eager"




def steered_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                      value: torch.Tensor, attention_mask: torch.Tensor | None, scaling: float,
                      dropout: float = 0.0, image_attention_scale: torch.Tensor | None = None,
                      image_token_mask: torch.Tensor | None = None, attention_rows: list | None = None,
                      attention_form: str = DEFAULT_ATTENTION_FORM, **kwargs):
    # query: [B, H, S, D]; key/value: [B, KV, K, D] (unscaled: the cache already holds them); mask [B, 1, S, K]
    groups = getattr(module, "num_key_value_groups", 1)             # CLIP's attention has no GQA
    key_states = repeat_kv(key, groups)                             # [B, H, K, D]
    value_states = repeat_kv(value, groups)                         # [B, H, K, D]
    steer = image_attention_scale is not None and image_token_mask is not None
    if steer and attention_form == "scaled-keys":
        factor = _image_key_factor(image_attention_scale[:, module.layer_idx], image_token_mask,
                                   key_states.shape[-2])            # [B, H, K] float32
        key_states = (_wide(key_states) * factor[..., None]).to(query.dtype)   # [B, H, K, D], image keys scaled
    scores = torch.matmul(query, key_states.transpose(2, 3)) * scaling  # [B, H, S, K]
    # Softmax and mask in fp32: in an fp16 graph, exp() of large logits overflows.
    scores = _wide(scores)
    if steer and attention_form == "scaled-logits":
        factor = _image_key_factor(image_attention_scale[:, module.layer_idx], image_token_mask, scores.shape[-1])
        scores = scores * factor[:, :, None, :]                     # [B, H, S, K]
    if attention_mask is not None:
        scores = scores + _wide(attention_mask[:, :, :, : key_states.shape[-2]])
    probs = torch.softmax(scores, dim=-1)                          # [B, H, S, K] float32
    if attention_rows is not None:
        if attention_form == "scaled-keys":
            attention_rows.append(_last_row(query, key_states, attention_mask, scaling))   # [B, K]
        else:
            attention_rows.append(probs[:, :, -1, :].mean(dim=1))   # [B, K] float32: the last row, mean over heads
    probs = probs.to(query.dtype)
    out = torch.matmul(probs, value_states)                         # [B, H, S, D]
    return out.transpose(1, 2).contiguous(), probs                  # [B, S, H, D]


def _image_key_factor(alpha: torch.Tensor, image_token_mask: torch.Tensor, keys: int) -> torch.Tensor:
    """alpha [B, H] (this layer), mask [B, >=K] -> [B, H, K] float32: alpha on image keys, 1 elsewhere."""
    is_image = image_token_mask[:, None, :keys]                     # [B, 1, K]
    alpha = _wide(alpha)
    one = torch.ones((), dtype=alpha.dtype, device=alpha.device)
    return torch.where(is_image, alpha[:, :, None], one)            # [B, H, K]


def _last_row(query, scaled_keys, attention_mask, scaling) -> torch.Tensor:
    """The call's last query row of the softmax, mean over heads: [B, K] float32.

    Recomputed from Q[-1] and the (already scaled) keys so that the main softmax's
    probabilities feed only the value MatMul; the same arithmetic on one row.
    """
    row = torch.matmul(query[:, :, -1:], scaled_keys.transpose(2, 3)) * scaling   # [B, H, 1, K]
    row = _wide(row)
    if attention_mask is not None:
        row = row + _wide(attention_mask[:, :, -1:, : scaled_keys.shape[-2]])
    return torch.softmax(row, dim=-1)[:, :, 0].mean(dim=1)          # [B, K]


def _wide(x: torch.Tensor) -> torch.Tensor:
    """float32, or float64 where the tensor already is (the dtype is fixed at trace time: graphs are unchanged)."""
    return x if x.dtype == torch.float64 else x.float()


def register() -> str:
    """Idempotently register the attention and its mask; returns the implementation name."""
    AttentionInterface.register(ATTENTION_NAME, steered_attention)
    AttentionMaskInterface.register(ATTENTION_NAME, eager_mask)
    return ATTENTION_NAME
