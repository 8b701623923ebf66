"""The fused decoder pair (plain + steered graphs, one shared KV buffer per layer) and its hot loop.

    answer:  pool.acquire(prompt + new tokens) --> KVBuffers (or a set an earlier answer gave back)
             image prefix: computed into the set, or copied in from its snapshot (once per question)
             prompt rows:  plain graph when alpha is 1 everywhere and no attention is asked for,
                           else the steered graph                          (a new IO binding per call)
             decode step:  embedding graph --writes--> set.embeds; set.mask gets one more 1;
                           plain graph on the set's replayed binding --> set.logits  (nothing allocated,
                           nothing copied but the logits; a CUDA graph per set when enabled)
             pool.release(set)

A pair that takes its positions as an input (Qwen's M-RoPE ``position_ids [3, 1, S]``, and DeepStack rows
for Qwen3-VL) decodes through the per-call binding instead: those inputs change every step.

A cache is (the set, the tokens in it).  A call from a cache of length P writes positions
[P, P + S) and reads [0, P + S), so two continuations of one cache run one after the other (the
confidence pass and the rescaled pass) give what two independent ones would: the second
overwrites the first's rows.  A prefix kept across answers is a snapshot (a copy).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from .errors import PromptError
from .graph_io import DecoderNames
from .kv_buffers import KVBuffers, KVPool, make_buffers
from .standard_decoder import attention_rows


@dataclass(frozen=True)
class FusedCache:
    buffers: KVBuffers
    length: int


@dataclass(frozen=True)
class PrefixSnapshot:
    values: tuple            # 2L numpy arrays [1, KV, length, D]
    length: int


class FusedDecoder:
    def __init__(self, plain: ort.InferenceSession, steered: ort.InferenceSession, embed: ort.InferenceSession,
                 plain_names: DecoderNames, steered_names: DecoderNames, embed_names: tuple[str, str], dtype,
                 device: str, shape: dict, max_capacity: int, cuda_graph: bool = False):
        self.plain, self.steered, self.embed = plain, steered, embed
        # each graph's tensor names by role (the manifest's io); embed: (input_ids, inputs_embeds)
        self.plain_names, self.steered_names, self.embed_names = plain_names, steered_names, embed_names
        self.dtype, self.device = np.dtype(dtype), device
        self.cuda_graph = cuda_graph
        # the embedding graph writes straight into the step's input when their float types agree
        made = next(t.type for t in embed.get_outputs() if t.name == embed_names[1])
        taken = next(t.type for t in plain.get_inputs() if t.name == plain_names.inputs_embeds)
        self._embed_direct = made == taken
        self.pool = KVPool(lambda capacity, graph_id: make_buffers(capacity, graph_id, dtype=self.dtype,
                                                                   device=device, **shape), max_capacity)
        self._prefill_options = ort.RunOptions()
        if cuda_graph:
            self._prefill_options.add_run_config_entry("gpu_graph_id", "-1")      # prompts are never captured

    # -- caches ----------------------------------------------------------------------------

    def new_cache(self, capacity: int) -> FusedCache:
        return FusedCache(self.pool.acquire(capacity), 0)

    def release(self, cache: FusedCache) -> None:
        self.pool.release(cache.buffers)

    def snapshot(self, cache: FusedCache) -> PrefixSnapshot:
        return PrefixSnapshot(cache.buffers.read_prefix(cache.length), cache.length)

    def restore(self, snapshot: PrefixSnapshot, capacity: int) -> FusedCache:
        buffers = self.pool.acquire(max(capacity, snapshot.length))
        buffers.write_prefix(snapshot.values)
        return FusedCache(buffers, snapshot.length)

    # -- calls -----------------------------------------------------------------------------

    def step(self, embeds: np.ndarray, cache: FusedCache, scale: np.ndarray, image_mask: np.ndarray, attention: bool,
             positions=None, deepstack=None):
        """``embeds`` [1, S, C] after ``cache``: (logits [V] float32, the cache S longer, StepAttention or None).

        The steered graph runs when ``scale`` [1, L, H] is not all ones or ``attention`` is asked for.
        ``positions`` [3, 1, S] and ``deepstack`` [D, 1, S, C] go to a pair that takes them (Qwen's)."""
        steered = attention or not np.all(scale == 1.0)
        session, n = (self.steered, self.steered_names) if steered else (self.plain, self.plain_names)
        total = cache.length + embeds.shape[1]
        self._check_room(cache, total)
        binding = session.io_binding()
        binding.bind_cpu_input(n.inputs_embeds, np.ascontiguousarray(embeds, dtype=self.dtype))     # [1, S, C]
        binding.bind_cpu_input(n.attention_mask, np.ones((1, total), dtype=np.int64))              # [1, P + S]
        if n.position_ids is not None:
            binding.bind_cpu_input(n.position_ids, np.ascontiguousarray(positions, dtype=np.int64))  # [3, 1, S]
        if n.deepstack is not None:
            binding.bind_cpu_input(n.deepstack, np.ascontiguousarray(deepstack, dtype=self.dtype))   # [D, 1, S, C]
        binding.bind_output(n.logits, "cpu")                  # outputs come back in binding order: logits first
        self._bind_buffers(binding, n, cache.buffers)
        if steered:
            binding.bind_cpu_input(n.scale, np.ascontiguousarray(scale, dtype=np.float32))            # [1, L, H]
            binding.bind_cpu_input(n.image_mask, np.ascontiguousarray(image_mask[:, :total]))        # [1, P + S]
            binding.bind_output(n.last_row, "cpu")
            binding.bind_output(n.image_share, "cpu")
        session.run_with_iobinding(binding, self._prefill_options)
        outputs = binding.get_outputs()
        logits = outputs[0].numpy()[0].astype(np.float32, copy=False)                     # [V]
        n_kv = len(n.present)
        rows = attention_rows(outputs[1 + n_kv], outputs[2 + n_kv]) if attention else None
        return logits, FusedCache(cache.buffers, total), rows

    def decode(self, token: int, cache: FusedCache, ones=None, image_mask=None, positions=None, deepstack=None):
        """One generated token through the plain graph on the set's fixed binding: (logits [V] float32, cache + 1)."""
        if self.plain_names.position_ids is not None:       # positions fed per step: a per-call binding
            row = self.embed.run(None, {self.embed_names[0]: np.array([[token]], dtype=np.int64)})[0]   # [1, 1, C]
            logits, cache, _ = self.step(row, cache, ones, image_mask, False, positions, deepstack)
            return logits, cache
        buffers = cache.buffers
        total = cache.length + 1
        self._check_room(cache, total)
        bindings = buffers.bindings or self._decode_bindings(buffers)
        buffers.set_token(token)
        if self._embed_direct:
            self.embed.run_with_iobinding(bindings["embed"])
        else:       # an fp16 decoder in an fp32 bundle: the embedding crosses the host once, cast
            row = self.embed.run(None, {self.embed_names[0]: np.array([[token]], dtype=np.int64)})[0]   # [1, 1, C]
            buffers.embeds.update_inplace(row.astype(self.dtype))
        buffers.set_mask_length(total)
        self.plain.run_with_iobinding(bindings["decode"], bindings["options"])
        return buffers.logits.numpy()[0], FusedCache(buffers, total)

    # -- bindings --------------------------------------------------------------------------

    @staticmethod
    def _bind_buffers(binding, names: DecoderNames, buffers: KVBuffers) -> None:
        for past, present, value in zip(names.past, names.present, buffers.values):
            binding.bind_ortvalue_input(past, value)
            binding.bind_ortvalue_output(present, value)

    def _decode_bindings(self, buffers: KVBuffers) -> dict:
        ids, embeds = self.embed_names
        n = self.plain_names
        embed = self.embed.io_binding()
        embed.bind_ortvalue_input(ids, buffers.token)
        embed.bind_ortvalue_output(embeds, buffers.embeds)
        decode = self.plain.io_binding()
        decode.bind_ortvalue_input(n.inputs_embeds, buffers.embeds)
        decode.bind_ortvalue_input(n.attention_mask, buffers.mask)
        self._bind_buffers(decode, n, buffers)
        decode.bind_ortvalue_output(n.logits, buffers.logits)
        options = ort.RunOptions()
        if self.cuda_graph:
            options.add_run_config_entry("gpu_graph_id", str(buffers.graph_id))
        buffers.bindings.update(embed=embed, decode=decode, options=options)
        return buffers.bindings

    @staticmethod
    def _check_room(cache: FusedCache, total: int) -> None:
        if total > cache.buffers.capacity:
            raise PromptError(f"{total} tokens do not fit the KV buffer of {cache.buffers.capacity} positions "
                              f"this answer was given")
