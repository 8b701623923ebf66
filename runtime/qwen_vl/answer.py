"""Answer a question about an image with an exported Qwen2.5-VL / Qwen3-VL bundle: numpy + onnxruntime only.

The schedule of one answer (n prompt tokens; image rows from the merged grid), as LLaVA's runtime:

    image --image_patches--> patches [N, CTPP], grid --vision_feeds--> vision --> features [T, C]
                                                                          (+ deepstack [D, T, C])
    prompt: template(question) -> ids, one <|image_pad|> expanded to T; embed(ids) with the features on
            the image rows; deepstack_embeds [D, 1, n, C] zero off them; M-RoPE positions [3, 1, n], delta
    prefill [0, k)   alpha = 1                    k = n - 1 (last_token) or just after the image (after_image)
    step    [k, n)   alpha = 1  --> confidence = max softmax of the first token   (not for ScalingVis)
    step    [k, n)   alpha = a  --> first token, from the same cache
    decode  greedy, alpha = 1, positions (cache length + delta) on every axis, until a stop token
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from graphs.qwen_manifest import QwenManifest
from runtime.steering import AdaptVis, ScalingVis, scale_tensor

from .image import QwenImageSpec, image_patches
from .layout import expand_image_tokens
from .merge import deepstack_rows, scatter_image_rows
from .positions import VisionTokens, decode_positions, rope_index
from .vision_feeds import VisionSpec, vision_feeds


@dataclass
class QwenAnswer:
    token_ids: list[int]
    text: str
    confidence: float | None            # max softmax of the first token with alpha = 1 (None for ScalingVis)
    alpha: object                       # the alpha used (None: plain)
    prompt_ids: np.ndarray              # [n]


class QwenModel:
    """An exported Qwen bundle's three sessions, its tokenizer, image spec and prompt template."""

    def __init__(self, bundle: str | Path, providers=("CPUExecutionProvider",)):
        folder = Path(bundle)
        self.manifest = m = QwenManifest.read(folder)
        self.sessions = {name: ort.InferenceSession(str(folder / g["file"]), providers=list(providers))
                         for name, g in m.graphs.items()}
        self.tokenizer = Tokenizer.from_file(str(folder / m.files["tokenizer"]))
        self.image_spec = QwenImageSpec.from_config(json.loads((folder / m.files["preprocessor_config"]).read_text()))
        self.vision_spec = VisionSpec(**{k: m.vision[k] for k in ("patch_size", "merge_size", "window_size",
                                                                   "position_grid_side")})
        self.tokens = VisionTokens(m.tokens["image"], m.tokens["video"], m.tokens["vision_start"])
        d = m.decoder
        self.layers, self.heads = d["num_layers"], d["num_attention_heads"]
        self.kv_shape = (1, d["num_key_value_heads"], 0, d["head_dim"])
        self.past_names = [t["name"] for t in m.graphs["decoder"]["inputs"] if t["role"].startswith("past_")]
        self.present_names = [t["name"] for t in m.graphs["decoder"]["outputs"] if t["role"].startswith("present_")]
        self.ones = scale_tensor(1.0, self.layers, self.heads)                 # [1, L, H]

    def prompt_ids(self, question: str, grid) -> np.ndarray:
        """int64 ``[n]``: the rendered template's ids, its image placeholder expanded for ``grid``."""
        ids = self.tokenizer.encode(self.manifest.prompt_template.format(question=question)).ids
        return expand_image_tokens(ids, self.tokens.image, [grid], self.vision_spec.merge_size)

    def answer(self, image, question: str, steering=None, max_new_tokens: int = 8) -> QwenAnswer:
        patches, grid = image_patches(image, self.image_spec)                  # [N, CTPP], (t, h, w)
        vision = self.sessions["vision"].run(None, vision_feeds(patches, grid, self.vision_spec))
        ids = self.prompt_ids(question, grid)                                   # [n]
        n = len(ids)
        rows = (ids == self.tokens.image)[None]                                 # [1, n]
        embeds = scatter_image_rows(self._embed(ids[None]), rows, vision[0])    # [1, n, C]
        stack = deepstack_rows(rows, vision[1]) if len(vision) > 1 else None    # [D, 1, n, C]
        positions, delta = rope_index(ids[None], np.asarray([grid]), self.tokens, self.vision_spec.merge_size)
        apply_to = getattr(steering, "apply_to", "last_token")
        split = n - 1 if apply_to == "last_token" else min(int(np.flatnonzero(rows[0]).max()) + 1, n - 1)
        mask = np.concatenate([rows, np.zeros((1, max_new_tokens), bool)], axis=1)   # [1, n + new]

        def call(lo, hi, cache, scale):
            return self._step(embeds[:, lo:hi], positions[:, :, lo:hi], cache, scale, mask[:, :hi],
                              None if stack is None else stack[:, :, lo:hi])

        _, cache = call(0, split, self._empty(n + max_new_tokens), self.ones)
        confidence = plain = None
        if not isinstance(steering, ScalingVis):
            plain = call(split, n, cache, self.ones)
            confidence = float(_softmax(plain[0]).max())
        if steering is None:
            alpha, (logits, cache) = None, plain
        else:
            alpha = steering.choose(confidence) if isinstance(steering, AdaptVis) else steering.alpha
            logits, cache = call(split, n, cache, scale_tensor(alpha, self.layers, self.heads))
        out: list[int] = []
        token = int(np.argmax(logits))
        while token not in self.manifest.stop_token_ids:
            out.append(token)
            if len(out) >= max_new_tokens:
                break
            length = n + len(out) - 1                                           # tokens in the cache
            step_stack = None if stack is None else np.zeros((stack.shape[0], 1, 1, stack.shape[-1]), stack.dtype)
            logits, cache = self._step(self._embed(np.array([[token]], np.int64)), decode_positions(delta, length),
                                       cache, self.ones, mask[:, :length + 1], step_stack)
            token = int(np.argmax(logits))
        self._release(cache)
        return QwenAnswer(out, self.tokenizer.decode(out), None if isinstance(steering, ScalingVis) else confidence,
                          alpha, ids)

    def _embed(self, ids: np.ndarray) -> np.ndarray:
        return self.sessions["embed"].run(None, {"input_ids": ids.astype(np.int64)})[0]    # [1, S, C]

    def _empty(self, capacity: int) -> list[np.ndarray]:
        """An empty cache for an answer of at most ``capacity`` tokens (the standard decoder grows its own)."""
        return [np.zeros(self.kv_shape, np.float32) for _ in self.past_names]

    def _release(self, cache) -> None:
        """The answer is done with ``cache`` (the standard decoder's arrays are simply dropped)."""

    def _step(self, embeds, positions, cache, scale, image_mask, deepstack):
        """One decoder call: (logits [V], the new cache)."""
        feeds = {"inputs_embeds": embeds, "attention_mask": np.ones(image_mask.shape, np.int64),
                 "position_ids": np.ascontiguousarray(positions), "image_attention_scale": scale,
                 "image_token_mask": image_mask, **dict(zip(self.past_names, cache))}
        if deepstack is not None:
            feeds["deepstack_embeds"] = np.ascontiguousarray(deepstack)
        out = dict(zip([o.name for o in self.sessions["decoder"].get_outputs()],
                       self.sessions["decoder"].run(None, feeds)))
        return out["logits"][0], [out[n] for n in self.present_names]


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max()
    e = np.exp(z)
    return e / e.sum()
