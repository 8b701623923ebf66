"""A naive PyTorch AdaptVis reference, written independently of export/ and runtime/.

transformers' LLaVA with eager attention, the stock processor for the image
and prompt, and the scaling done as the authors do it: the image-key logits of
the last prompt row (or of every row after the image) are multiplied by alpha
during the prefill only.  Two complete generations (confidence, then answer);
nothing is reused between them.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from transformers.models.llama import modeling_llama


@dataclass
class ReferenceAnswer:
    token_ids: list[int]
    confidence: float | None
    alpha: float | None


class Reference:
    def __init__(self, checkpoint):
        from transformers import AutoProcessor, LlavaForConditionalGeneration

        self.processor = AutoProcessor.from_pretrained(checkpoint, use_fast=False)
        self.model = LlavaForConditionalGeneration.from_pretrained(checkpoint, attn_implementation="eager").eval()
        self.image_id = self.model.config.image_token_index

    def inputs(self, image, question: str):
        conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        prompt = self.processor.apply_chat_template(conversation, add_generation_prompt=True)
        return self.processor(images=image, text=prompt, return_tensors="pt")

    def generate(self, inputs, alpha: float | None, max_new_tokens: int, rows: str = "last_token") -> list[int]:
        with self._scaled(inputs.input_ids[0], alpha, rows), torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                      eos_token_id=self.processor.tokenizer.eos_token_id,
                                      pad_token_id=self.processor.tokenizer.pad_token_id)
        ids = out[0, inputs.input_ids.shape[1]:].tolist()
        eos = self.processor.tokenizer.eos_token_id
        return ids[: ids.index(eos)] if eos in ids else ids

    def confidence(self, inputs) -> float:
        with torch.no_grad():
            logits = self.model(**inputs).logits[0, -1]
        return float(torch.softmax(logits.double(), -1).max())

    def last_row_attention(self, inputs, alpha: float | None, rows: str = "last_token") -> torch.Tensor:
        """[L, n] float64: the last prompt row's attention over every key, per layer, mean over heads
        (``output_attentions=True``), with the prompt's image keys scaled by ``alpha`` as in ``generate``."""
        with self._scaled(inputs.input_ids[0], alpha, rows), torch.no_grad():
            attentions = self.model(**inputs, output_attentions=True).attentions     # L x [1, H, n, n]
        return torch.stack([a[0, :, -1, :].double().mean(dim=0) for a in attentions])

    def plain(self, image, question, max_new_tokens):
        inputs = self.inputs(image, question)
        return ReferenceAnswer(self.generate(inputs, None, max_new_tokens), self.confidence(inputs), None)

    def scalingvis(self, image, question, alpha, max_new_tokens, rows="last_token"):
        inputs = self.inputs(image, question)
        return ReferenceAnswer(self.generate(inputs, alpha, max_new_tokens, rows), None, alpha)

    def adaptvis(self, image, question, low, high, threshold, max_new_tokens, rows="last_token"):
        inputs = self.inputs(image, question)
        confidence = self.confidence(inputs)
        alpha = low if confidence < threshold else high
        return ReferenceAnswer(self.generate(inputs, alpha, max_new_tokens, rows), confidence, alpha)

    @contextlib.contextmanager
    def _scaled(self, input_ids, alpha, rows):
        if alpha is None:
            yield
            return
        is_image = input_ids == self.image_id                         # [n]
        last_image = int(torch.nonzero(is_image).max())
        stock = modeling_llama.eager_attention_forward

        def scaled_eager(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
            key = modeling_llama.repeat_kv(key, module.num_key_value_groups)
            value = modeling_llama.repeat_kv(value, module.num_key_value_groups)
            weights = torch.matmul(query, key.transpose(2, 3)) * scaling          # [B, H, S, K]
            if query.shape[2] > 1:                                                # the prefill only
                image_keys = is_image[: weights.shape[-1]]
                first_row = weights.shape[2] - 1 if rows == "last_token" else last_image + 1
                for row in range(first_row, weights.shape[2]):
                    weights[:, :, row, image_keys] = weights[:, :, row, image_keys] * alpha
            if attention_mask is not None:
                weights = weights + attention_mask[:, :, :, : key.shape[-2]]
            weights = torch.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
            return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights

        modeling_llama.eager_attention_forward = scaled_eager
        try:
            yield
        finally:
            modeling_llama.eager_attention_forward = stock
