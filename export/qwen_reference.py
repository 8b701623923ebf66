"""A PyTorch AdaptVis reference for Qwen2.5-VL and Qwen3-VL: transformers' eager attention, image keys scaled.

The authors' arithmetic, as for LLaVA (``tests/runtime/reference.py``): during the prefill only, the
pre-softmax logits of the chosen query rows against the image keys are multiplied by alpha, before
the causal mask is added; decode steps are not steered.

    s = Q K^T / sqrt(d)                               # [B, H, S, K], per decoder layer l
    s[:, h, r, j] *= alpha[l, h]   for r in rows, j with input_ids[j] == <|image_pad|>
    p = softmax(s + causal_mask)                      # fp32, as the stock eager attention

    rows: "last_token" (the paper): r = S - 1;  "after_image": every r after the last image token.

The patch replaces ``eager_attention_forward`` in the family's modeling module for the duration of
a call, and steers decoder attention only: the vision tower calls the same function (its blocks
have no ``layer_idx``) and is left as it is.  Images and prompts go through transformers' own
pieces, independent of the runtime: the slow ``Qwen2VLImageProcessor``, the tokenizer's chat
template, and ``<|image_pad|>`` expanded in the text as transformers' Qwen processors do (their
``AutoProcessor`` also builds a video processor, which needs torchvision).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROWS = ("last_token", "after_image")


@dataclass
class ReferenceAnswer:
    token_ids: list[int]
    confidence: float | None
    alpha: float | np.ndarray | None


class QwenReference:
    """A Qwen2.5-VL or Qwen3-VL checkpoint with eager attention and the AdaptVis patch."""

    def __init__(self, checkpoint: str | Path):
        from transformers import AutoModelForImageTextToText, AutoTokenizer, Qwen2VLImageProcessor

        self.model = AutoModelForImageTextToText.from_pretrained(checkpoint, attn_implementation="eager").eval()
        self.tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        self.image_processor = Qwen2VLImageProcessor.from_pretrained(checkpoint)
        config = self.model.config
        self.image_id = config.image_token_id
        self.merge = config.vision_config.spatial_merge_size
        text = config.text_config
        self.layers, self.heads = text.num_hidden_layers, text.num_attention_heads
        self.stop_ids = [i for i in (self.tokenizer.eos_token_id, self.tokenizer.pad_token_id) if i is not None]
        self._modeling = __import__(type(self.model).__module__, fromlist=["eager_attention_forward"])

    def inputs(self, image, question: str) -> dict:
        """input_ids [1, S], attention_mask [1, S], pixel_values [N, C*T*P*P], image_grid_thw [1, 3]."""
        pixels = self.image_processor(images=image, return_tensors="pt")
        conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        text = self.tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        count = int(pixels["image_grid_thw"][0].prod()) // self.merge ** 2
        text = text.replace("<|image_pad|>", "<|image_pad|>" * count)
        ids = self.tokenizer(text, return_tensors="pt")
        return {"input_ids": ids["input_ids"], "attention_mask": ids["attention_mask"],
                "pixel_values": pixels["pixel_values"], "image_grid_thw": pixels["image_grid_thw"]}

    def generate(self, inputs: dict, alpha=None, max_new_tokens: int = 8, rows: str = "last_token") -> list[int]:
        with self.steered(inputs["input_ids"][0], alpha, rows), torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                      eos_token_id=self.stop_ids, pad_token_id=self.tokenizer.pad_token_id)
        ids = out[0, inputs["input_ids"].shape[1]:].tolist()
        cut = [ids.index(s) for s in self.stop_ids if s in ids]
        return ids[: min(cut)] if cut else ids

    def logits(self, inputs: dict, alpha=None, rows: str = "last_token", output_attentions: bool = False):
        """The prompt's last-row logits [V] (and, with ``output_attentions``, each layer's [1, H, S, S])."""
        with self.steered(inputs["input_ids"][0], alpha, rows), torch.no_grad():
            out = self.model(**inputs, output_attentions=output_attentions)
        return (out.logits[0, -1], out.attentions) if output_attentions else out.logits[0, -1]

    def confidence(self, inputs: dict) -> float:
        return float(torch.softmax(self.logits(inputs).double(), -1).max())

    def plain(self, image, question, max_new_tokens=8) -> ReferenceAnswer:
        inputs = self.inputs(image, question)
        return ReferenceAnswer(self.generate(inputs, None, max_new_tokens), self.confidence(inputs), None)

    def scalingvis(self, image, question, alpha, max_new_tokens=8, rows="last_token") -> ReferenceAnswer:
        inputs = self.inputs(image, question)
        return ReferenceAnswer(self.generate(inputs, alpha, max_new_tokens, rows), None, alpha)

    def adaptvis(self, image, question, low, high, threshold, max_new_tokens=8, rows="last_token") -> ReferenceAnswer:
        inputs = self.inputs(image, question)
        confidence = self.confidence(inputs)
        alpha = low if confidence < threshold else high
        return ReferenceAnswer(self.generate(inputs, alpha, max_new_tokens, rows), confidence, alpha)

    @contextlib.contextmanager
    def steered(self, input_ids: torch.Tensor, alpha, rows: str = "last_token", trace: list | None = None):
        """Within: the decoder's prefill attention scales the image-key logits of ``rows`` by ``alpha``
        (a number, [layers] or [layers, heads]).  ``trace`` collects (layer, scaled [S, K] bool) per call."""
        if rows not in ROWS:
            raise ValueError(f"rows must be one of {ROWS}, got {rows!r}")
        if alpha is None:
            yield
            return
        factors = _per_layer_head(alpha, self.layers, self.heads)          # [L, H] float32
        is_image = input_ids == self.image_id                               # [S]
        last_image = int(torch.nonzero(is_image).max())
        stock = self._modeling.eager_attention_forward
        repeat_kv = self._modeling.repeat_kv

        def scaled_eager(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
            layer = getattr(module, "layer_idx", None)
            if layer is None or query.shape[2] == 1:                        # the vision tower; a decode step
                return stock(module, query, key, value, attention_mask, scaling, dropout, **kwargs)
            key = repeat_kv(key, module.num_key_value_groups)               # [B, H, K, D]
            value = repeat_kv(value, module.num_key_value_groups)
            weights = torch.matmul(query, key.transpose(2, 3)) * scaling     # [B, H, S, K]
            first = weights.shape[2] - 1 if rows == "last_token" else last_image + 1
            scaled = torch.zeros(weights.shape[2:], dtype=torch.bool)       # [S, K]
            scaled[first:, : weights.shape[-1]] = is_image[: weights.shape[-1]]
            factor = torch.where(scaled, factors[layer][:, None, None], torch.ones(()))   # [H, S, K]
            weights = weights * factor.to(weights.dtype)
            if trace is not None:
                trace.append((layer, scaled))
            if attention_mask is not None:
                weights = weights + attention_mask[:, :, :, : key.shape[-2]]
            weights = torch.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
            return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights

        self._modeling.eager_attention_forward = scaled_eager
        try:
            yield
        finally:
            self._modeling.eager_attention_forward = stock


def _per_layer_head(alpha, layers: int, heads: int) -> torch.Tensor:
    """A number, [L] or [L, H] -> float32 [L, H]."""
    a = torch.as_tensor(np.asarray(alpha, dtype=np.float32))
    if a.ndim == 0:
        return a.expand(layers, heads).clone()
    if a.shape == (layers,):
        return a[:, None].expand(layers, heads).clone()
    if a.shape == (layers, heads):
        return a.clone()
    raise ValueError(f"alpha must be a number, [{layers}] or [{layers}, {heads}]; got shape {tuple(a.shape)}")
