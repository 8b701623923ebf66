"""A Qwen bundle's fused decoder pair (plain + steered, one shared KV buffer per layer), called one by one.

    QwenFusedModel(bundle)._step(...)     ``QwenModel._step`` on the pair: the plain graph when alpha is 1
                                          everywhere, else the steered one; a call from a cache of length P
                                          writes positions [P, P + S) and reads [0, P + S)
        feeds: inputs_embeds [1, S, C], attention_mask ones [1, P + S], position_ids [3, 1, S],
               (Qwen3-VL) deepstack_embeds [D, 1, S, C], (steered) image_attention_scale, image_token_mask
    QwenFusedModel(bundle).answer(...)    ``runtime.load(bundle, decoder="fused")``'s answer (runtime/model.py)

The export's checks of the pair (export/qwen_vl/fused.py) drive ``_step`` by hand; answers go through the
runtime's one schedule and ``runtime/fused_decoder.py``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from graphs.contracts import IMAGE_ATTENTION_SCALE, IMAGE_TOKEN_MASK
from runtime.errors import BundleError, PromptError
from runtime.kv_buffers import KVBuffers, KVPool, make_buffers

from .answer import QwenModel

POSITION_IDS = "position_ids"
DEEPSTACK_EMBEDS = "deepstack_embeds"


@dataclass(frozen=True)
class QwenFusedCache:
    buffers: KVBuffers
    length: int


class QwenFusedModel(QwenModel):
    """``QwenModel`` whose decoder calls run the bundle's fused pair (``manifest.fused_decoders[dtype]``)."""

    decoder = "fused"

    def __init__(self, bundle: str | Path, providers=("CPUExecutionProvider",), dtype: str = "fp32",
                 files: dict | None = None):
        super().__init__(bundle, providers)
        folder = Path(bundle)
        record = files or (self.manifest.fused_decoders or {}).get(dtype)
        if not record:
            raise BundleError(f"{folder} has no fused {dtype} decoder (export without --no-fused to write one)")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.plain = ort.InferenceSession(str(folder / record["plain"]), options, providers=list(providers))
        self.steered = ort.InferenceSession(str(folder / record["steered"]), options, providers=list(providers))
        d = self.manifest.decoder
        self.device = "cpu" if list(providers)[0] == "CPUExecutionProvider" else "cuda"
        shape = {"layers": d["num_layers"], "kv_heads": d["num_key_value_heads"], "head_dim": d["head_dim"],
                 "hidden": d["hidden_size"], "vocab": d["vocab_size"]}
        self.pool = KVPool(lambda capacity, graph_id: make_buffers(capacity, graph_id, dtype=np.float32,
                                                                   device=self.device, **shape),
                           d["max_position_embeddings"])

    def _empty(self, capacity: int) -> QwenFusedCache:
        return QwenFusedCache(self.pool.acquire(capacity), 0)

    def _release(self, cache: QwenFusedCache) -> None:
        self.pool.release(cache.buffers)

    def _step(self, embeds, positions, cache: QwenFusedCache, scale, image_mask, deepstack):
        """One decoder call: (logits [V], the cache S longer)."""
        steered = not np.all(scale == 1.0)
        session = self.steered if steered else self.plain
        total = cache.length + embeds.shape[1]
        if total > cache.buffers.capacity:
            raise PromptError(f"{total} tokens do not fit the KV buffer of {cache.buffers.capacity} positions")
        binding = session.io_binding()
        binding.bind_cpu_input("inputs_embeds", np.ascontiguousarray(embeds, dtype=np.float32))
        binding.bind_cpu_input("attention_mask", np.ones((1, total), np.int64))
        binding.bind_cpu_input(POSITION_IDS, np.ascontiguousarray(positions, dtype=np.int64))
        if deepstack is not None:
            binding.bind_cpu_input(DEEPSTACK_EMBEDS, np.ascontiguousarray(deepstack, dtype=np.float32))
        binding.bind_output("logits", "cpu")
        for past, present, value in zip(self.past_names, self.present_names, cache.buffers.values):
            binding.bind_ortvalue_input(past, value)
            binding.bind_ortvalue_output(present, value)
        if steered:
            binding.bind_cpu_input(IMAGE_ATTENTION_SCALE, np.ascontiguousarray(scale, dtype=np.float32))
            binding.bind_cpu_input(IMAGE_TOKEN_MASK, np.ascontiguousarray(image_mask[:, :total]))
            for name in ("last_row_attention", "image_attention_share"):
                binding.bind_output(name, "cpu")
        session.run_with_iobinding(binding)
        outputs = binding.get_outputs()
        self.last_outputs = outputs                   # the read-outs of a steered call: [1 + 2L], [2 + 2L]
        return outputs[0].numpy()[0].astype(np.float32, copy=False), QwenFusedCache(cache.buffers, total)
