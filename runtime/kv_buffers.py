"""Static KV buffers for the fused decoder pair: allocated once, bound as past and present, reused.

One ``KVBuffers`` set per answer in flight (a pool keeps the idle ones for the next answer):

    keys[l], values[l]  [1, KV, capacity, D]   the decoder's float type, on the device; both the
                                               past input and the present output of every call
    embeds   [1, 1, C]      the decode step's input: the embedding graph writes it, the decoder reads it
    token    [1, 1] int64   the embedding graph's input
    mask     [1, capacity] int64   ones for the tokens so far, then zeros (the fixed-shape decode step)
    (token and mask have host rows: on a CPU the same memory, written in place; on a GPU copied across)
    logits   [1, V] float32 the decode step's output

The decode step's IO binding is made once per set and replayed: every tensor keeps its address,
which is what a captured CUDA graph needs (``graph_id``: one captured graph per set).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort

CAPACITY_STEP = 256         # capacities are rounded up to this, so a few sets serve every answer
IDLE_SETS = 2               # idle sets kept for the next answers (more answers in flight allocate more)


@dataclass(eq=False)
class KVBuffers:
    capacity: int
    device: str
    host: list[np.ndarray | None]       # CPU: the numpy arrays behind ``values`` (None on a GPU)
    values: list[ort.OrtValue]          # 2L, ordered like DecoderNames.past
    embeds: ort.OrtValue
    token: ort.OrtValue
    mask: ort.OrtValue
    logits: ort.OrtValue
    graph_id: int
    mask_row: np.ndarray = None         # [1, capacity] int64, the host copy of ``mask`` (on a CPU: its memory)
    token_row: np.ndarray = None        # [1, 1] int64, the host copy of ``token`` (on a CPU: its memory)
    mask_ones: int = 0                  # how many leading ones ``mask`` holds now
    bindings: dict = field(default_factory=dict)     # the replayed decode bindings, made on first use

    def set_token(self, token: int) -> None:
        self.token_row[0, 0] = token
        if self.device != "cpu":
            self.token.update_inplace(self.token_row)

    def set_mask_length(self, length: int) -> None:
        """``mask`` = ones for the first ``length`` positions, zeros after: only the positions that change
        are written (one a decode step), and on a GPU the row is copied across."""
        if length == self.mask_ones:
            return
        low, high = sorted((self.mask_ones, length))
        self.mask_row[0, low:high] = 1 if length > self.mask_ones else 0
        self.mask_ones = length
        if self.device != "cpu":
            self.mask.update_inplace(self.mask_row)

    def read_prefix(self, length: int) -> tuple[np.ndarray, ...]:
        """A copy of every buffer's first ``length`` positions: [1, KV, length, D] each."""
        if self.host[0] is not None:
            return tuple(h[:, :, :length].copy() for h in self.host)
        return tuple(v.numpy()[:, :, :length].copy() for v in self.values)

    def write_prefix(self, prefix: tuple[np.ndarray, ...]) -> None:
        """Copy ``prefix`` (from ``read_prefix``) into the first positions of every buffer."""
        length = prefix[0].shape[2]
        if self.host[0] is not None:
            for h, p in zip(self.host, prefix):
                h[:, :, :length] = p
            return
        for v, p in zip(self.values, prefix):       # a GPU: the whole buffer crosses once per question
            full = np.zeros(v.shape(), p.dtype)
            full[:, :, :length] = p
            v.update_inplace(full)


class KVPool:
    """Hands out ``KVBuffers`` of at least a given capacity; thread-safe."""

    def __init__(self, make, max_capacity: int):
        self._make = make                   # (capacity, graph_id) -> KVBuffers
        self.max_capacity = max_capacity
        self._idle: list[KVBuffers] = []
        self._lock = threading.Lock()
        self._made = 0

    def acquire(self, needed: int) -> KVBuffers:
        with self._lock:
            fits = [b for b in self._idle if b.capacity >= needed]
            if fits:
                best = min(fits, key=lambda b: b.capacity)
                self._idle.remove(best)
                return best
            self._made += 1
            graph_id = self._made
        capacity = min(-(-needed // CAPACITY_STEP) * CAPACITY_STEP, self.max_capacity)
        return self._make(max(capacity, needed), graph_id)

    def release(self, buffers: KVBuffers) -> None:
        with self._lock:
            self._idle.append(buffers)
            if len(self._idle) > IDLE_SETS:
                self._idle.remove(min(self._idle, key=lambda b: b.capacity))


def make_buffers(capacity: int, graph_id: int, *, layers: int, kv_heads: int, head_dim: int, hidden: int,
                 vocab: int, dtype, device: str) -> KVBuffers:
    shape = (1, kv_heads, capacity, head_dim)
    host: list[np.ndarray | None] = []
    values = []
    for _ in range(2 * layers):
        array = np.empty(shape, dtype)
        array.fill(0)           # written now, so the pages are resident from the start, not as tokens arrive
        values.append(ort.OrtValue.ortvalue_from_numpy(array, device, 0))   # CPU: shares the array's memory
        host.append(array if device == "cpu" else None)
    rows = {"mask": np.zeros((1, capacity), np.int64), "token": np.zeros((1, 1), np.int64)}
    fixed = {name: ort.OrtValue.ortvalue_from_numpy(rows.get(name, np.zeros(s, t)), device, 0)
             for name, s, t in (("embeds", (1, 1, hidden), dtype), ("token", (1, 1), np.int64),
                                ("mask", (1, capacity), np.int64), ("logits", (1, vocab), np.float32))}
    return KVBuffers(capacity, device, host, values, graph_id=graph_id, mask_row=rows["mask"],
                     token_row=rows["token"], **fixed)
