"""What the plain and the steered decoder graph share: a node writer, the once-a-call inputs, the MLP and the head.

Both graphs keep their KV cache in one buffer per layer and tensor, bound as past and present
at once (GroupQueryAttention's shared past/present buffer):

    past_key_values.{l}.key [1, KV, capacity, D]  ==  present.{l}.key   (the same memory)

A call writes its S new rows at [tokens so far, + S) and reads [0, tokens so far + S); nothing is
copied.  The call's length comes from ``attention_mask`` [1, M]: ones for the tokens so far and
this call's, then zeros (M = the tokens so far + S, or the whole capacity for a fixed-shape
decode step):

    seqlens_k = ReduceSum(attention_mask) - 1     [1] int32    (the last position written)
    total_sequence_length = M                      scalar int32 (GroupQueryAttention's bound)
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from .external import ExternalWeights

MS = "com.microsoft"
OPSET = 18              # the default domain; com.microsoft ops at version 1
INT_MAX = np.iinfo(np.int64).max


class GraphBuilder:
    """Nodes with generated output names, small constants inline, weights external (shared by name)."""

    def __init__(self, weights: ExternalWeights):
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.weights = weights
        self._count = 0
        self._consts: dict[tuple, str] = {}
        self._names: set[str] = set()

    def op(self, op_type: str, inputs: list[str], outputs: int | list[str] = 1, domain: str = "", **attrs):
        self._count += 1
        names = outputs if isinstance(outputs, list) else [f"{op_type}_{self._count}_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, names, name=f"{op_type}_{self._count}",
                                           domain=domain, **attrs))
        return names[0] if len(names) == 1 else names

    def const(self, values, dtype=np.int64) -> str:
        array = np.asarray(values, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._consts:
            name = f"const_{len(self._consts)}"
            self.initializers.append(onnx.numpy_helper.from_array(array, name))
            self._consts[key] = name
        return self._consts[key]

    def weight(self, name: str, array: np.ndarray | None = None) -> str:
        """The external weight ``name``: written from ``array`` the first time any graph asks for it."""
        if name not in self._names:
            self.initializers.append(self.weights.tensor(name, None if self.weights.has(name) else array))
            self._names.add(name)
        return name

    def save(self, path, name: str, inputs, outputs, producer: str) -> None:
        graph = helper.make_graph(self.nodes, name, inputs, outputs, initializer=self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS, 1)],
                                  producer_name=producer)
        model.ir_version = 9
        onnx.save(model, str(path))


def call_lengths(b: GraphBuilder) -> tuple[str, str, str]:
    """seqlens_k [1] int32, total_sequence_length (scalar int32), tokens [1] int64 (so far + this call's)."""
    tokens = b.op("ReduceSum", ["attention_mask", b.const([1])], keepdims=0)                 # [1]
    seqlens = b.op("Cast", [b.op("Sub", [tokens, b.const(1)])], to=TensorProto.INT32)        # [1]
    length = b.op("Gather", [b.op("Shape", ["attention_mask"]), b.const(1)], axis=0)         # scalar
    return seqlens, b.op("Cast", [length], to=TensorProto.INT32), tokens


def input_norm(b: GraphBuilder, l: int, w, x: str, residual: str | None, eps: float) -> tuple[str, str]:
    """(normed h, residual stream): layer 0 norms the embeddings; later layers add the MLP's output first."""
    if residual is None:
        return b.op("SimplifiedLayerNormalization", [x, b.weight(f"l{l}.input_norm", w.input_norm)],
                    axis=-1, epsilon=eps, stash_type=1), x
    h, _, _, residual = b.op("SkipSimplifiedLayerNormalization",
                             [x, residual, b.weight(f"l{l}.input_norm", w.input_norm)], 4, domain=MS, epsilon=eps)
    return h, residual


def attention_out_and_mlp(b: GraphBuilder, n, l: int, w, attn: str, residual: str) -> tuple[str, str]:
    """o projection, residual add + norm, SiLU-gated MLP: (the MLP's output [1, S, C], residual stream)."""
    o = b.op("MatMul", [attn, b.weight(f"l{l}.o", w.o)])                                      # [1, S, C]
    h2, _, _, residual = b.op("SkipSimplifiedLayerNormalization",
                              [o, residual, b.weight(f"l{l}.post_norm", w.post_norm)], 4, domain=MS,
                              epsilon=n.rms_eps)
    gate, up = b.op("Split", [b.op("MatMul", [h2, b.weight(f"l{l}.gate_up", w.gate_up)]),
                              b.const([n.intermediate, n.intermediate])], 2, axis=-1)         # [1, S, I] each
    act = b.op("Mul", [b.op("QuickGelu", [gate], domain=MS, alpha=1.0), up])                 # SiLU(g) * u
    return b.op("MatMul", [act, b.weight(f"l{l}.down", w.down)]), residual                   # [1, S, C]


def head(b: GraphBuilder, n, final_norm, lm_head, x: str, residual: str, ftype: int) -> None:
    """The last position's logits [1, V] float32 (``logits``)."""
    final, _, _, _ = b.op("SkipSimplifiedLayerNormalization", [x, residual, b.weight("final_norm", final_norm)],
                          4, domain=MS, epsilon=n.rms_eps)                                    # [1, S, C]
    last = b.op("Slice", [final, b.const([-1]), b.const([INT_MAX]), b.const([1])])            # [1, 1, C]
    logits = b.op("MatMul", [last, b.weight("lm_head", lm_head)])                             # [1, 1, V]
    if ftype != TensorProto.FLOAT:
        logits = b.op("Cast", [logits], to=TensorProto.FLOAT)
    b.op("Squeeze", [logits, b.const([1])], ["logits"])                                       # [1, V]


def kv_io(n, ftype: int, past_key: str, past_value: str, present_key: str, present_value: str):
    """The shared buffers' past inputs and present outputs, [1, KV, capacity, D] each."""
    shape = ("batch", n.num_kv_heads, "kv_capacity", n.head_dim)
    inputs, outputs = [], []
    for i in range(n.num_layers):
        for past, present in ((past_key, present_key), (past_value, present_value)):
            inputs.append(helper.make_tensor_value_info(past.format(i=i), ftype, shape))
            outputs.append(helper.make_tensor_value_info(present.format(i=i), ftype, shape))
    return inputs, outputs
