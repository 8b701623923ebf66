"""An exported Qwen2.5-VL / Qwen3-VL bundle's graphs, called one by one: the export's parity instrument.

    QwenModel(bundle).answer(image, question, steering)   the bundle's answer through ``runtime.load``'s one
                                                           schedule (runtime/model.py), standard decoder.onnx
    _step(embeds, positions [3, 1, S], cache, scale, image_mask, deepstack [D, 1, S, C])
                                                           one decoder call on plain numpy caches, which the
                                                           export's checks (export/qwen_vl/fused.py) drive by hand
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from graphs.qwen_manifest import QwenManifest
from runtime.answer import Answer
from runtime.model import VLM
from runtime.steering import scale_tensor

from .image_input import QwenImages
from .layout import expand_image_tokens
from .positions import VisionTokens


class QwenModel:
    """An exported Qwen bundle's three sessions, its tokenizer, image spec and prompt template."""

    decoder = "standard"            # what ``answer`` runs on

    def __init__(self, bundle: str | Path, providers=("CPUExecutionProvider",)):
        self.folder = folder = Path(bundle)
        self.manifest = m = QwenManifest.read(folder)
        self.sessions = {name: ort.InferenceSession(str(folder / g["file"]), providers=list(providers))
                         for name, g in m.graphs.items()}
        self.tokenizer = Tokenizer.from_file(str(folder / m.files["tokenizer"]))
        images = QwenImages.from_bundle(folder, m)
        self.image_spec, self.vision_spec = images.image_spec, images.vision_spec
        self._providers = list(providers)
        self._vlm = None
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

    def answer(self, image, question: str, steering=None, max_new_tokens: int = 8) -> Answer:
        """``runtime.load(bundle, decoder=...).answer`` (opened on first use): the one schedule of every family."""
        if self._vlm is None:
            self._vlm = VLM(self.folder, providers=self._providers, decoder=self.decoder)
        return self._vlm.answer(image, question, steering=steering, max_new_tokens=max_new_tokens)

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

