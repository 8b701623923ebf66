"""The PyTorch reference, timed: transformers' LLaVA with eager attention, greedy generate.

A copy of the project's test reference (tests/runtime/reference.py), kept separate so that
the benchmark never imports tests: the stock processor for the image and prompt, and the
scaling done as the AdaptVis authors do it: the image-key logits of the last prompt row are
multiplied by alpha during the prefill only.  AdaptVis is two complete passes: a full forward
for the confidence, then a full generate with the chosen alpha; nothing is reused between them.

Every generation makes exactly ``tokens`` new tokens (min_new_tokens = max_new_tokens), so
that it can be matched token for token with our runtime.
"""
from __future__ import annotations

import contextlib
import time

import torch
from transformers import AutoProcessor, LlavaForConditionalGeneration, LogitsProcessor, LogitsProcessorList
from transformers.models.llama import modeling_llama


class _TokenClock(LogitsProcessor):
    """Records when each new token's logits are ready (generate calls it once per token)."""

    def __init__(self):
        self.times: list[float] = []

    def __call__(self, input_ids, scores):
        self.times.append(time.perf_counter())
        return scores


class _Stopwatch:
    """Accumulates the time spent inside a module's forward (forward pre-hook and hook)."""

    def __init__(self, *modules):
        self.total = 0.0
        self._start = None
        for m in modules:
            m.register_forward_pre_hook(self._begin)
            m.register_forward_hook(self._end)

    def _begin(self, module, args):
        if self._start is None:
            self._start = (module, time.perf_counter())

    def _end(self, module, args, output):
        if self._start is not None and self._start[0] is module:
            self.total += time.perf_counter() - self._start[1]
            self._start = None


class Reference:
    def __init__(self, checkpoint, device: str = "cpu"):
        self.device = device
        self.processor = AutoProcessor.from_pretrained(checkpoint, use_fast=False)
        self.model = LlavaForConditionalGeneration.from_pretrained(checkpoint, attn_implementation="eager").eval()
        self.model.to(device)
        self.image_id = self.model.config.image_token_index
        self.tokenizer = self.processor.tokenizer
        inner = self.model.model
        # the vision tower + projector: the same scope as our vision.onnx
        self.vision_clock = _Stopwatch(inner.vision_tower, inner.multi_modal_projector)

    @staticmethod
    def threads() -> int:
        return torch.get_num_threads()

    def inputs(self, image, question: str):
        conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        prompt = self.processor.apply_chat_template(conversation, add_generation_prompt=True)
        return self.processor(images=image, text=prompt, return_tensors="pt").to(self.device)

    def _generate(self, inputs, alpha, tokens: int, clock: _TokenClock) -> list[int]:
        with self._scaled(inputs.input_ids[0], alpha), torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                                      eos_token_id=self.tokenizer.eos_token_id,
                                      pad_token_id=self.tokenizer.pad_token_id,
                                      logits_processor=LogitsProcessorList([clock]))
        return out[0, inputs.input_ids.shape[1]:].tolist()

    def _confidence(self, inputs) -> float:
        with torch.no_grad():
            logits = self.model(**inputs).logits[0, -1]
        return float(torch.softmax(logits.double(), -1).max())

    def answer(self, image, question: str, method: dict, tokens: int) -> dict:
        """One timed answer.  ``method``: {"kind": "plain"|"scalingvis"|"adaptvis", "alpha"/"low","high","threshold"}."""
        clock = _TokenClock()
        self.vision_clock.total = 0.0
        t0 = time.perf_counter()
        inputs = self.inputs(image, question)
        t_inputs = time.perf_counter() - t0
        confidence = alpha = None
        if method["kind"] == "scalingvis":
            alpha = method["alpha"]
        elif method["kind"] == "adaptvis":
            confidence = self._confidence(inputs)                       # full pass 1
            alpha = method["low"] if confidence < method["threshold"] else method["high"]
        ids = self._generate(inputs, alpha, tokens, clock)              # full pass 2 (or the only one)
        total = time.perf_counter() - t0
        ttft = clock.times[0] - t0
        decode = clock.times[-1] - clock.times[0]
        vision = self.vision_clock.total
        return {"total_s": total, "vision_s": vision, "prefill_s": ttft - vision - t_inputs, "ttft_s": ttft,
                "preprocess_s": t_inputs, "decode_s": decode,
                "decode_tokens_per_s": (len(ids) - 1) / decode if len(ids) > 1 and decode > 0 else None,
                "decode_s_per_token": decode / (len(ids) - 1) if len(ids) > 1 else None,
                "tokens": len(ids), "token_ids": ids, "confidence": confidence, "alpha": alpha}

    @contextlib.contextmanager
    def _scaled(self, input_ids, alpha):
        """Multiply the image-key logits of the last prompt row by alpha, in the prefill only."""
        if alpha is None:
            yield
            return
        is_image = (input_ids == self.image_id).to(self.device)       # [n]
        stock = modeling_llama.eager_attention_forward

        def scaled_eager(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
            key = modeling_llama.repeat_kv(key, module.num_key_value_groups)
            value = modeling_llama.repeat_kv(value, module.num_key_value_groups)
            weights = torch.matmul(query, key.transpose(2, 3)) * scaling          # [B, H, S, K]
            if query.shape[2] > 1:                                                # the prefill only
                image_keys = is_image[: weights.shape[-1]]
                row = weights.shape[2] - 1
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
