"""The three torch modules that become the three ONNX graphs.

Each wraps a part of one ``LlavaForConditionalGeneration`` (weights shared,
nothing copied) and has exactly the inputs/outputs of its contract in
``graphs/contracts.py``, in that order.

The decoder walks the Llama layers itself rather than calling
``LlamaModel.forward``, so that the 4-D mask is built here from plain ops
(transformers' vmap mask builder breaks the TorchScript exporter) and so the
KV cache is a flat list of tensors:

    past_key_values.{i}.key [B, KV, P, D] --+
                                            +--> concat --> attention --> present.{i}.key [B, KV, P+S, D]
    new keys of this call  [B, KV, S, D] ---+

The decoder's outputs end with the attention of the call's last query row
(``last_row_attention`` [B, L, P+S], ``image_attention_share`` [B, L]; see
``graphs.contracts.decoder_contract``), which ``steered_attention`` collects
layer by layer into a list passed down as the ``attention_rows`` keyword.
"""
from __future__ import annotations

import torch
from torch import nn

from graphs.manifest import ATTENTION_FORMS, DEFAULT_ATTENTION_FORM

from .steered_attention import register


class VisionEncoder(nn.Module):
    """pixel_values [B, 3, H, W] -> image_features [B, T, hidden]: CLIP up to the feature layer, then the projector."""

    def __init__(self, llava):
        super().__init__()
        cfg = llava.config
        if not isinstance(cfg.vision_feature_layer, int):
            raise NotImplementedError("multi-layer vision features (a list of feature layers) are not supported")
        self.config = cfg
        vision = llava.model.vision_tower.vision_model
        # The same eager attention (no steering inputs here): its softmax runs in fp32 in fp16 graphs.
        vision.config._attn_implementation = register()
        if vision.pre_layrnorm.weight.dtype != torch.float32:
            _layer_norms_in_fp32(vision)     # an fp16 export: the norms compute in float32 too
        self.embeddings, self.pre_layrnorm = vision.embeddings, vision.pre_layrnorm
        n = len(vision.encoder.layers)
        # hidden_states[k] is the output after k layers (hidden_states[0] = embeddings);
        # layer -2 means hidden_states[n - 1]: the last layer is never run.
        self.keep = cfg.vision_feature_layer % (n + 1)
        self.layers = vision.encoder.layers[: self.keep]
        self.drop_cls = cfg.vision_feature_select_strategy == "default"
        self.projector = llava.model.multi_modal_projector

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        h = self.pre_layrnorm(self.embeddings(pixel_values))     # [B, 1 + patches, C]
        for layer in self.layers:
            h = layer(h, None, None)[0]                           # [B, 1 + patches, C]
        if self.drop_cls:
            h = h[:, 1:]                                          # [B, patches, C]
        return self.projector(h)                                  # [B, T, hidden]


def _layer_norms_in_fp32(module: nn.Module) -> None:
    """Every LayerNorm under ``module`` computes in float32 and returns its input's dtype (fp16 overflows
    in the variance of activations in the hundreds; TensorRT and ``graphs check`` want norms in fp32)."""
    for norm in (m for m in module.modules() if isinstance(m, nn.LayerNorm)):
        norm.forward = _fp32_layer_norm.__get__(norm)


def _fp32_layer_norm(self: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    # x [..., C] fp16 -> normalised in float32 -> [..., C] fp16, then the fp16 affine (no cast of a weight:
    # the bound-weights export writes the weights as they are)
    y = nn.functional.layer_norm(x.float(), self.normalized_shape, None, None, self.eps).to(x.dtype)
    if self.weight is not None:
        y = y * self.weight
    return y + self.bias if self.bias is not None else y


class TokenEmbedding(nn.Module):
    """input_ids [B, S] -> inputs_embeds [B, S, hidden]."""

    def __init__(self, llava):
        super().__init__()
        self.config = llava.config.text_config
        self.embed_tokens = llava.model.language_model.embed_tokens

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(input_ids)


class _ConcatCache:
    """Duck-typed transformers Cache: concatenates past and new K/V, remembers the result."""

    def __init__(self, past: list[torch.Tensor]):
        self.past = past                      # [k0, v0, k1, v1, ...], each [B, KV, P, D]
        self.present: list[torch.Tensor] = [None] * len(past)

    def update(self, key, value, layer_idx, cache_kwargs=None):
        k = torch.cat([self.past[2 * layer_idx], key], dim=2)       # [B, KV, P+S, D]
        v = torch.cat([self.past[2 * layer_idx + 1], value], dim=2)
        self.present[2 * layer_idx], self.present[2 * layer_idx + 1] = k, v
        return k, v


class SteeredDecoder(nn.Module):
    """The Llama decoder with KV cache and the image-attention temperature inputs.

    ``attention_form``: where the temperature is applied, ``"scaled-logits"`` or ``"scaled-keys"``
    (see ``steered_attention``); the same attention either way.
    """

    def __init__(self, llava, attention_form: str = DEFAULT_ATTENTION_FORM):
        super().__init__()
        if attention_form not in ATTENTION_FORMS:
            raise ValueError(f"attention_form must be one of {ATTENTION_FORMS}, got {attention_form!r}")
        self.attention_form = attention_form
        text_config = llava.config.text_config
        # Only the text config gets the steered attention (the CLIP tower would crash on it).
        text_config._attn_implementation = register()
        self.config = text_config
        self.model = llava.model.language_model
        self.lm_head = llava.lm_head

    def forward(self, inputs_embeds, attention_mask, position_ids, past_key_values,
                image_attention_scale, image_token_mask):
        # inputs_embeds [B, S, C]; attention_mask [B, P+S] int64; position_ids [B, S]
        # past_key_values: 2L tensors [B, KV, P, D]; image_attention_scale [B, L, H]; image_token_mask [B, P+S]
        seq = inputs_embeds.shape[1]
        total = attention_mask.shape[1]
        past_len = total - seq
        mask = additive_causal_mask(attention_mask, seq, past_len, inputs_embeds.dtype)  # [B, 1, S, P+S]
        cache = _ConcatCache(list(past_key_values))
        rows: list[torch.Tensor] = []                               # per layer: [B, P+S] (steered_attention appends)
        hidden = inputs_embeds
        position_embeddings = self.model.rotary_emb(hidden, position_ids)
        for layer in self.model.layers:
            hidden = layer(hidden, attention_mask=mask, position_ids=position_ids, past_key_values=cache,
                           position_embeddings=position_embeddings,
                           image_attention_scale=image_attention_scale, image_token_mask=image_token_mask,
                           attention_rows=rows, attention_form=self.attention_form)
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden
        last = self.model.norm(hidden[:, -1, :])                    # [B, C]: the last position only
        logits = self.lm_head(last)                                 # [B, V]
        # The last query row's attention, mean over heads, per layer (float32 in fp16 graphs too),
        # and the part of it on image keys: cheap enough to leave on (a [B, L, P+S] tensor).
        last_row_attention = torch.stack(rows, dim=1)               # [B, L, P+S] float32
        zero = torch.zeros((), dtype=last_row_attention.dtype, device=last_row_attention.device)
        on_image = torch.where(image_token_mask[:, None, :], last_row_attention, zero)    # [B, L, P+S]
        image_attention_share = on_image.sum(dim=-1)                # [B, L]
        return (logits, *cache.present, last_row_attention, image_attention_share)


def additive_causal_mask(attention_mask: torch.Tensor, seq: int, past_len, dtype) -> torch.Tensor:
    """[B, P+S] 0/1 padding mask -> [B, 1, S, P+S] additive mask (0 = attend, finfo.min = blocked)."""
    total = attention_mask.shape[1]
    key_pos = torch.arange(total, device=attention_mask.device)                 # [K]
    query_pos = torch.arange(seq, device=attention_mask.device) + past_len      # [S]
    allowed = (key_pos[None, :] <= query_pos[:, None])[None, None]              # [1, 1, S, K]
    allowed = allowed & attention_mask[:, None, None, :].bool()                 # [B, 1, S, K]
    # A finite minimum, not -inf: a fully masked row stays NaN-free, and TensorRT fp16 prefers it.
    blocked = torch.tensor(torch.finfo(dtype).min, dtype=dtype, device=attention_mask.device)
    zero = torch.zeros((), dtype=dtype, device=attention_mask.device)
    return torch.where(allowed, zero, blocked)
