"""The standard decoder (``decoder.onnx``, every provider, TensorRT included) and its KV cache.

The KV cache never leaves ONNX Runtime between steps:

    step t:  past OrtValues (device) --bind--> decoder --> present OrtValues (device)
    step t+1: those present OrtValues are bound as past, as they are

A cache is a tuple of OrtValues that no step writes into (each step makes new, longer tensors),
so one cached prefix can start any number of continuations, from any thread: a snapshot is the
cache itself.  Only the logits ([1, vocab]) come back to host memory; the attention outputs are
left unbound (never copied anywhere) unless asked for.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from .graph_io import DecoderNames


@dataclass(frozen=True)
class KVCache:
    values: tuple            # 2L OrtValues [1, KV, length, D], ordered like DecoderNames.past
    length: int


@dataclass(frozen=True, eq=False)
class StepAttention:
    """The decoder's attention outputs for the last query row of one step (see ``decoder_contract``)."""

    last_row: np.ndarray     # float32 [L, total]: softmax over every key (after the steering scale), mean over heads
    image_share: np.ndarray  # float32 [L]: last_row summed over the image-token keys


class StandardDecoder:
    def __init__(self, session: ort.InferenceSession, embed, names: DecoderNames, dtype, device: str,
                 kv_heads: int, head_dim: int):
        self.session, self.embed = session, embed       # embed: ids [n] -> embeddings [1, n, C]
        self.names = names                              # the graph's tensor names, by role (the manifest's io)
        self.dtype, self.device = dtype, device
        self._empty_shape = (1, kv_heads, 0, head_dim)

    def new_cache(self, capacity: int) -> KVCache:
        empty = np.zeros(self._empty_shape, dtype=self.dtype)
        return KVCache(tuple(ort.OrtValue.ortvalue_from_numpy(empty, self.device, 0) for _ in self.names.past), 0)

    def release(self, cache: KVCache) -> None:
        """Nothing to give back: caches are immutable OrtValues, freed with their last reference."""

    def snapshot(self, cache: KVCache) -> KVCache:
        return cache

    def restore(self, snapshot: KVCache, capacity: int) -> KVCache:
        return snapshot

    def decode(self, token: int, cache: KVCache, ones: np.ndarray, image_mask: np.ndarray, positions=None,
               deepstack=None):
        """One generated token: (logits [V] float32, the cache one longer)."""
        extra = {k: v for k, v in (("positions", positions), ("deepstack", deepstack)) if v is not None}
        logits, cache, _ = self.step(self.embed(np.array([token], dtype=np.int64)), cache, ones, image_mask, False,
                                     **extra)
        return logits, cache

    def step(self, embeds, cache: KVCache, scale, image_mask, attention: bool, positions=None, deepstack=None):
        """``embeds`` [1, S, C] after ``cache``: (logits [V] float32, new cache, StepAttention or None).

        ``positions``: M-RoPE's [3, 1, S] int64 (None: [1, S], cache.length + 0..S-1); ``deepstack``:
        [D, 1, S, C] for a graph that takes DeepStack rows."""
        seq = embeds.shape[1]
        total = cache.length + seq
        n = self.names
        if positions is None:
            positions = np.arange(cache.length, total, dtype=np.int64)[None]                       # [1, S]
        binding = self.session.io_binding()
        binding.bind_cpu_input(n.inputs_embeds, np.ascontiguousarray(embeds, dtype=self.dtype))     # [1, S, C]
        binding.bind_cpu_input(n.attention_mask, np.ones((1, total), dtype=np.int64))              # [1, P + S]
        binding.bind_cpu_input(n.position_ids, np.ascontiguousarray(positions, dtype=np.int64))    # [1, S] / [3, 1, S]
        if n.deepstack is not None:
            binding.bind_cpu_input(n.deepstack, np.ascontiguousarray(deepstack, dtype=self.dtype))  # [D, 1, S, C]
        binding.bind_cpu_input(n.scale, scale)                                                       # [1, L, H]
        binding.bind_cpu_input(n.image_mask, np.ascontiguousarray(image_mask[:, :total]))           # [1, P + S]
        for name, value in zip(n.past, cache.values):
            binding.bind_ortvalue_input(name, value)
        binding.bind_output(n.logits, "cpu")
        for name in n.present:
            binding.bind_output(name, self.device, 0)
        if attention:                       # else left unbound: never copied out
            binding.bind_output(n.last_row, "cpu")
            binding.bind_output(n.image_share, "cpu")
        self.session.run_with_iobinding(binding)
        outputs = binding.get_outputs()     # in binding order
        logits = outputs[0].numpy()[0].astype(np.float32, copy=False)          # [V]
        n_kv = len(n.present)
        new_cache = KVCache(tuple(outputs[1: 1 + n_kv]), total)
        if not attention:
            return logits, new_cache, None
        return logits, new_cache, attention_rows(outputs[1 + n_kv], outputs[2 + n_kv])


def attention_rows(last_row: ort.OrtValue, image_share: ort.OrtValue) -> StepAttention:
    return StepAttention(last_row.numpy()[0].astype(np.float32, copy=False),        # [L, total]
                         image_share.numpy()[0].astype(np.float32, copy=False))     # [L]
