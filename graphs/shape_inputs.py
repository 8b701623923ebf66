"""No integer scalar graph input may feed a shape operand (TensorRT would make it a shape tensor).

A graph input whose *values* decide a Reshape's shape, a Slice's bounds, a Range, an Expand,
a ConstantOfShape or a Tile becomes a shape tensor in TensorRT: it needs its own profile
values, its data must sit on the host, and the engine's shapes depend on it.  Our graphs take
their lengths from ``Shape`` of real tensors instead; this check keeps it that way.

    int input (rank 0 or 1) --values--> ... --> Reshape.shape / Slice.starts.. / Range.* / ...  = problem
    any input --Shape--> ...                                                                    = fine
"""
from __future__ import annotations

from collections import deque

import onnx

from .graph_index import GraphIndex, node_label

# op -> (input index, operand name) of the operands that are shapes or bounds
SHAPE_OPERANDS = {
    "Reshape": ((1, "shape"),),
    "Slice": ((1, "starts"), (2, "ends"), (3, "axes"), (4, "steps")),
    "Range": ((0, "start"), (1, "limit"), (2, "delta")),
    "Expand": ((1, "shape"),),
    "ConstantOfShape": ((0, "input"),),
    "Tile": ((1, "repeats"),),
}
_INTEGER = {onnx.TensorProto.INT8, onnx.TensorProto.INT16, onnx.TensorProto.INT32, onnx.TensorProto.INT64,
            onnx.TensorProto.UINT8, onnx.TensorProto.UINT16, onnx.TensorProto.UINT32, onnx.TensorProto.UINT64}
_VALUE_BLIND = {"Shape", "Size"}       # their outputs depend on the shape, not the values


def integer_scalar_inputs(graph: onnx.GraphProto) -> list[str]:
    """Graph inputs of an integer type with rank 0 or 1."""
    out = []
    for i in graph.input:
        t = i.type.tensor_type
        if t.elem_type in _INTEGER and (not t.HasField("shape") or len(t.shape.dim) <= 1):
            out.append(i.name)
    return out


def shape_input_problems(model: onnx.ModelProto) -> list[str]:
    index = GraphIndex(model.graph)
    problems = []
    for source in integer_scalar_inputs(model.graph):
        reached = _value_flow(index, source)
        for n in model.graph.node:
            for i, operand in SHAPE_OPERANDS.get(n.op_type, ()):
                if i < len(n.input) and n.input[i] in reached:
                    problems.append(f"{node_label(n)}: its {operand!r} operand comes from the integer scalar input "
                                    f"{source!r}; TensorRT would make that input a shape tensor (derive lengths "
                                    f"with Shape of a real tensor instead)")
    return problems


def _value_flow(index: GraphIndex, source: str) -> set[str]:
    """Tensors whose values depend on ``source``'s values."""
    reached = {source}
    queue = deque([source])
    while queue:
        for n in index.consumers.get(queue.popleft(), ()):
            if n.op_type in _VALUE_BLIND:
                continue
            for o in n.output:
                if o and o not in reached:
                    reached.add(o)
                    queue.append(o)
    return reached
