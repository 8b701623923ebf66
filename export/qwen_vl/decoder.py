"""The Qwen2.5-VL / Qwen3-VL embedding and steered decoder as torch modules that become ONNX graphs.

The decoder walks the text layers itself (as ``export/wrappers.SteeredDecoder`` does for LLaVA):
the 4-D mask from plain ops, a flat KV cache, the AdaptVis attention of ``export/steered_attention``
(registered on the text config only: the vision tower keeps its own attention), and M-RoPE:

    position_ids [3, B, S] --text rotary (chunked sections / interleaved)--> cos, sin   (once per call)
    inputs_embeds [B, S, C]
      -> layer 0 -> (+ deepstack_embeds[0]) -> layer 1 -> (+ deepstack_embeds[1]) -> ... -> norm
      -> logits of the last position [B, V]
    past_key_values.{i}.* [B, KV, P, D] ++ new [B, KV, S, D] -> present.{i}.* [B, KV, P+S, D]

``deepstack_embeds [D, B, S, C]`` holds the DeepStack features on the image rows of this call and
zeros elsewhere (the runtime scatters them as it scatters the image features into inputs_embeds):
transformers adds them to the image rows after each of the first D layers, ``h + 0`` leaves the
other rows bit-for-bit as they were.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from graphs.manifest import DEFAULT_ATTENTION_FORM

from ..steered_attention import register
from ..wrappers import _ConcatCache, additive_causal_mask


class QwenEmbedding(nn.Module):
    """input_ids [B, S] -> inputs_embeds [B, S, C]."""

    def __init__(self, model):
        super().__init__()
        self.embed_tokens = model.model.language_model.embed_tokens

    def forward(self, input_ids):
        return self.embed_tokens(input_ids)


class QwenDecoder(nn.Module):
    """Inputs and outputs as ``graphs.qwen_vl_contracts.decoder_contract`` (in that order)."""

    def __init__(self, model, attention_form: str = DEFAULT_ATTENTION_FORM):
        super().__init__()
        self.text = model.model.language_model
        self.lm_head = model.lm_head
        self.num_layers = len(self.text.layers)
        self.deepstack = len(getattr(model.config.vision_config, "deepstack_visual_indexes", None) or [])
        self.attention_form = attention_form

    def forward(self, inputs_embeds, attention_mask, position_ids, *rest):
        # inputs_embeds [B, S, C]; attention_mask [B, P+S] int64; position_ids [3, B, S] int64
        # rest: 2L past tensors [B, KV, P, D], image_attention_scale [B, L, H], image_token_mask [B, P+S],
        #       (DeepStack) deepstack_embeds [D, B, S, C]
        past = list(rest[: 2 * self.num_layers])
        scale, image_mask = rest[2 * self.num_layers], rest[2 * self.num_layers + 1]
        deepstack = rest[2 * self.num_layers + 2] if self.deepstack else None
        seq, total = inputs_embeds.shape[1], attention_mask.shape[1]
        mask = additive_causal_mask(attention_mask, seq, total - seq, inputs_embeds.dtype)   # [B, 1, S, P+S]
        cache = _ConcatCache(past)
        rows: list[torch.Tensor] = []                               # per layer [B, P+S] (steered_attention)
        hidden = inputs_embeds
        position_embeddings = self.text.rotary_emb(hidden, position_ids)   # cos, sin: once per call
        with _steered_text_attention(self.text.config):
            hidden = self._layers(hidden, mask, position_embeddings, cache, scale, image_mask, rows, deepstack)
        logits = self.lm_head(self.text.norm(hidden[:, -1, :]))        # [B, V]
        last_row_attention = torch.stack(rows, dim=1)                  # [B, L, P+S] float32
        zero = torch.zeros((), dtype=last_row_attention.dtype)
        share = torch.where(image_mask[:, None, :], last_row_attention, zero).sum(dim=-1)   # [B, L]
        return (logits, *cache.present, last_row_attention, share)

    def _layers(self, hidden, mask, position_embeddings, cache, scale, image_mask, rows, deepstack):
        for i, layer in enumerate(self.text.layers):
            hidden = layer(hidden, attention_mask=mask, position_ids=None, past_key_values=cache,
                           position_embeddings=position_embeddings, image_attention_scale=scale,
                           image_token_mask=image_mask, attention_rows=rows, attention_form=self.attention_form)
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden
            if deepstack is not None and i < self.deepstack:
                hidden = hidden + deepstack[i].to(hidden.dtype)        # [B, S, C]: zero off the image rows
        return hidden


@contextlib.contextmanager
def _steered_text_attention(text_config):
    """The AdaptVis attention on the text layers for one call (trace-time Python, nothing in the graph);
    the model's own attention afterwards, so the same loaded model still serves the reference."""
    own = text_config._attn_implementation
    text_config._attn_implementation = register()
    try:
        yield
    finally:
        text_config._attn_implementation = own
