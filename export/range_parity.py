"""The decoder's parity check, layer range by layer range: one ONNX Runtime session per range.

On an x86 CPU ONNX Runtime has no fp16 MatMul: a session over an fp16 decoder casts every weight
to fp32 (the ``1b`` decoder, 2.2 GB in fp16: 4.8-5.0 GB for the session alone).  Here the exported
graph is cut into ranges of layers, each checked in a session of its own, so only one range's
weights are ever held:

    decoder.onnx, loaded without its data           decoder.onnx_data (never read here)
        |  layers: the residual Add chain from inputs_embeds, two Adds per layer
        |      hidden[0] = inputs_embeds, hidden[i + 1] = the output of layer i's second Add
        |  attention rows: rows[i] = the i-th input of the Concat that makes last_row_attention
        |  range [a, b), cut with onnx.utils.Extractor:
        |      inputs   hidden[a], the decoder inputs it reads (attention_mask, position_ids,
        |               image_attention_scale, image_token_mask; inputs_embeds for its shape),
        |               past_key_values.{a..b-1}.*
        |               (the last range also rows[0..a-1])
        |      outputs  present.{a..b-1}.*, and hidden[b], rows[a..b-1]
        |               (the last range: logits, last_row_attention, image_attention_share)
        |      anything else the range would read (another layer's cache, a tensor of another
        |      range) is an ExportError: the structure was not recognised
        v
    .decoder.layers-a-c.onnx beside decoder.onnx, deleted once checked: its initializers keep their
        external-data entries (decoder.onnx_data, same offsets), so ONNX Runtime reads only this
        range's weights

    for each range:                         outer: one session alive at a time
        for each recorded step:             inner: the range carries its own K/V cache
            hidden[step] <- the range's hidden[b]      (ONNX Runtime's own, chained range to range)
            compare its presents; the last range: logits and the attention outputs

Every output is compared with the same recorded PyTorch reference, the same tolerances and the
same manifest keys as the whole-graph check.  fp32: the same numbers (tests/export/test_range_parity.py).
fp16: each cut rounds the residual stream to fp16, as the graph declares it, where a whole-graph CPU
session fuses the residual Add into the next layer's norm and skips that rounding; the figures move
within fp16 rounding (tiny, logits: 7.5e-3 whole, 9.8e-3 with one layer a range; tolerance 5e-2).
The ranges: as many layers as keep the fp32 bytes of a range's
weights (what ONNX Runtime holds on a CPU) within a budget, counted from the last range (which
also holds the final norm and the LM head); a layer over budget gets a range of its own.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx.utils import Extractor

from graphs.contracts import IMAGE_ATTENTION_SHARE, LAST_ROW_ATTENTION, PAST_KEY, PAST_VALUE, PRESENT_KEY, \
    PRESENT_VALUE, decoder_contract

from .errors import ExportError
from .parity import whole_outputs
from .release import trim_heap

INPUTS_EMBEDS = "inputs_embeds"
LOGITS = "logits"


@dataclass(frozen=True)
class DecoderLayout:
    """Where the exported decoder graph can be cut."""
    num_layers: int
    hidden: tuple[str, ...]     # hidden[i]: the hidden state entering layer i; hidden[L]: leaving the last
    rows: tuple[str, ...]       # rows[i]: layer i's piece of last_row_attention [B, 1, K]


def decoder_layout(model: onnx.ModelProto, num_layers: int) -> DecoderLayout:
    """The layer boundaries of an exported decoder, from its residual Add chain; ExportError if not found."""
    graph = model.graph
    consumers: dict[str, list[onnx.NodeProto]] = {}
    producer: dict[str, onnx.NodeProto] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
        for name in node.output:
            producer[name] = node
    dtype = next((i.type.tensor_type.elem_type for i in graph.input if i.name == INPUTS_EMBEDS), None)
    chain, h = [INPUTS_EMBEDS], INPUTS_EMBEDS      # chain: inputs_embeds, then each residual Add's output
    while True:
        adds = [n for n in consumers.get(h, []) if n.op_type == "Add"]
        same_type = [n for n in consumers.get(h, []) if n.op_type == "Cast" and _cast_to(n) == dtype]
        if len(adds) == 1:
            h = adds[0].output[0]
            chain.append(h)
        elif not adds and len(same_type) == 1:    # fp32: the norm's .float() is a Cast to the same type,
            h = same_type[0].output[0]            # which the residual Add then reads
        else:
            break
    if len(chain) != 2 * num_layers + 1:
        raise ExportError(f"decoder graph not recognised for a check by layer range: the residual Add chain "
                          f"from {INPUTS_EMBEDS!r} has {len(chain) - 1} Adds, expected 2 per layer "
                          f"({2 * num_layers}); check it whole (--parity-layers 0)")
    concat = producer.get(LAST_ROW_ATTENTION)
    if concat is None or concat.op_type != "Concat" or len(concat.input) != num_layers:
        raise ExportError(f"decoder graph not recognised for a check by layer range: {LAST_ROW_ATTENTION!r} is "
                          f"not a Concat of {num_layers} per-layer rows; check it whole (--parity-layers 0)")
    return DecoderLayout(num_layers, tuple(chain[::2]), tuple(concat.input))


def _cast_to(node: onnx.NodeProto) -> int | None:
    return next((a.i for a in node.attribute if a.name == "to"), None)


def _presents(layers: range) -> list[str]:
    return [t.format(i=i) for i in layers for t in (PRESENT_KEY, PRESENT_VALUE)]


def _pasts(layers: range) -> list[str]:
    return [t.format(i=i) for i in layers for t in (PAST_KEY, PAST_VALUE)]


class DecoderCutter:
    """Cuts layer ranges out of one exported decoder graph (loaded without its weights' data)."""

    def __init__(self, path: Path, num_layers: int):
        self.path = Path(path)
        model = onnx.load(str(self.path), load_external_data=False)
        self.layout = decoder_layout(model, num_layers)
        self.model = model
        graph = model.graph
        self.graph_inputs = [i.name for i in graph.input]
        self.initializers = {t.name: t for t in graph.initializer}
        self.producer = {name: k for k, node in enumerate(graph.node) for name in node.output if name}
        self._extractor = None

    def io(self, a: int, b: int) -> tuple[list[str], list[str]]:
        """(inputs it may read, outputs) of the range of layers [a, b)."""
        L = self.layout.num_layers
        # every decoder input but the other layers' caches (a later range reads inputs_embeds' shape only)
        shared = [n for n in self.graph_inputs if n not in _pasts(range(L)) and n != self.layout.hidden[a]]
        inputs = [self.layout.hidden[a], *shared, *_pasts(range(a, b))]
        if b == L:
            inputs += self.layout.rows[:a]
            outputs = [LOGITS, *_presents(range(a, b)), LAST_ROW_ATTENTION, IMAGE_ATTENTION_SHARE]
        else:
            outputs = [*_presents(range(a, b)), self.layout.hidden[b], *self.layout.rows[a:b]]
        return inputs, outputs

    def closure(self, a: int, b: int) -> tuple[list[int], list[str]]:
        """(indices of the nodes the range computes, in graph order; the inputs it reads).

        ExportError if it would read anything besides its allowed inputs and the initializers."""
        allowed, outputs = self.io(a, b)
        allowed_set = set(allowed)
        nodes: set[int] = set()
        read: set[str] = set()
        stack = list(outputs)
        while stack:
            name = stack.pop()
            if name in allowed_set:
                read.add(name)
                continue
            if name in self.initializers or not name:
                continue
            k = self.producer.get(name)
            if k is None:
                raise ExportError(f"decoder graph not recognised for a check by layer range: layers {a}-{b - 1} "
                                  f"would read {name!r}, which is neither their input nor a weight; "
                                  f"check it whole (--parity-layers 0)")
            if k not in nodes:
                nodes.add(k)
                stack += list(self.model.graph.node[k].input)
        return sorted(nodes), [n for n in allowed if n in read]

    def fp32_bytes(self, a: int, b: int) -> int:
        """The bytes of the range's weights once ONNX Runtime casts them to fp32 (fp16 on an x86 CPU)."""
        nodes, _ = self.closure(a, b)
        names = {i for k in nodes for i in self.model.graph.node[k].input if i in self.initializers}
        total = 0
        for name in names:
            t = self.initializers[name]
            itemsize = onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
            if t.data_type in (onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16):
                itemsize = 4
            total += int(np.prod(t.dims, dtype=np.int64)) * itemsize
        return total

    def plan(self, max_bytes: int | None = None, layers: int | None = None) -> list[tuple[int, int]]:
        """Ranges [(a, b)] covering every layer in order: ``layers`` per range (the last range the
        remainder), or as many as keep ``fp32_bytes`` within ``max_bytes``, filled from the last range."""
        L = self.layout.num_layers
        if layers is not None:
            if layers < 1:
                raise ExportError(f"layers per range must be >= 1, got {layers}")
            return [(a, min(a + layers, L)) for a in range(0, L, layers)]
        if max_bytes is None:
            return [(0, L)]
        ranges, b = [], L
        while b > 0:
            a = b - 1
            while a > 0 and self.fp32_bytes(a - 1, b) <= max_bytes:
                a -= 1
            ranges.append((a, b))
            b = a
        return ranges[::-1]

    def extract(self, a: int, b: int) -> tuple[onnx.ModelProto, list[str], list[str]]:
        """(the range's model, its inputs, its outputs); its initializers still point into the data file."""
        _, inputs = self.closure(a, b)
        _, outputs = self.io(a, b)
        if self._extractor is None:
            # types for the cut tensors (the hidden states, the rows): onnx's shape inference, once
            self._extractor = Extractor(onnx.shape_inference.infer_shapes(self.model))
        try:
            sub = self._extractor.extract_model(inputs, outputs)
        except ValueError as e:     # a cut tensor whose type the shape inference did not find
            raise ExportError(f"decoder graph not recognised for a check by layer range: {e}") from None
        del sub.graph.value_info[:]      # the graph as exported: no hints the whole graph does not have
        return sub, inputs, outputs


def compare_decoder_by_ranges(path: Path, steps: list, cases, judge, *, max_bytes: int | None = None,
                              layers: int | None = None, phase=None, log=None) -> list[tuple[int, int]]:
    """The decoder's steps checked range by range (see the module docstring); returns the ranges.

    ``judge``: ``parity.Judge`` (tolerances, worst differences, ParityError); ``phase``: a
    ``name -> context manager`` around each range (``MemoryLog.phase``)."""
    phase = phase or (lambda name: contextlib.nullcontext())
    L = cases.num_layers
    cutter = DecoderCutter(path, L)
    ranges = cutter.plan(max_bytes, layers)
    for a, b in ranges:          # every cut checked before the first session
        cutter.closure(a, b)
    if log:
        log(f"parity: decoder checked in {len(ranges)} layer range(s): "
            + ", ".join(f"{a}-{b - 1}" for a, b in ranges)
            + (f" (fp32 weights <= {max_bytes / 1e9:.2f} GB a range)" if max_bytes and layers is None else ""))
    hidden = [step.feeds[INPUTS_EMBEDS] for step in steps]            # [1, S, C] per step: the next range's input
    rows: list[dict[str, np.ndarray]] = [{} for _ in steps]           # per step, {row name: [1, 1, K]} so far
    for a, b in ranges:
        with phase(f"parity decoder layers {a}-{b - 1}"):
            _check_range(cutter, a, b, steps, hidden, rows, cases.kv_shape, judge)
        trim_heap()
    for key in ("decoder", "decoder.present_relative", "decoder.attention"):   # the whole-graph check's order
        if key in judge.worst:
            judge.worst[key] = judge.worst.pop(key)
    return ranges


def _check_range(cutter: DecoderCutter, a: int, b: int, steps: list, hidden: list, rows: list[dict],
                 kv_shape: tuple, judge) -> None:
    """Layers [a, b) in a session of their own, step by step; ``hidden`` and ``rows`` move on to layer b.

    The session is local: it is gone (and its model file deleted) before the next range's is made."""
    L, layout = cutter.layout.num_layers, cutter.layout
    sub, inputs, outputs = cutter.extract(a, b)
    tmp = cutter.path.parent / f".{cutter.path.stem}.layers-{a}-{b - 1}.onnx"
    try:
        onnx.save(sub, str(tmp))
        del sub
        try:
            session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        except Exception as e:      # onnxruntime's own exception types
            raise ExportError(f"the cut-out model of decoder layers {a}-{b - 1} does not load in ONNX Runtime "
                              f"({type(e).__name__}: {e}); check the decoder whole (--parity-layers 0)") from None
        pasts, presents = _pasts(range(a, b)), _presents(range(a, b))
        checked = [LOGITS, *presents, LAST_ROW_ATTENTION, IMAGE_ATTENTION_SHARE] if b == L else presents
        names = decoder_contract(L).output_names
        past: list[np.ndarray] = []
        running: dict = {}          # the expected cache of this range's layers, step to step (whole_outputs)
        for k, step in enumerate(steps):
            if step.first:
                past = [np.zeros(kv_shape, dtype=judge.np_float) for _ in pasts]
            known = {**step.feeds, **rows[k], **dict(zip(pasts, past)), layout.hidden[a]: hidden[k]}
            got = dict(zip(outputs, session.run(outputs, {n: known[n] for n in inputs})))
            expected = whole_outputs(step, names, running, only=set(checked))
            for name in checked:
                judge.check("decoder", name, got[name], expected[name],
                            f"{step.context} (decoder layers {a}-{b - 1} of {L} in a session of their own)")
            past = [got[n] for n in presents]
            if b < L:   # copies: an output of ONNX Runtime can keep its session's memory arena alive
                hidden[k] = got[layout.hidden[b]].copy()
                rows[k].update({n: got[n].copy() for n in layout.rows[a:b]})
        del session
    finally:
        tmp.unlink(missing_ok=True)
