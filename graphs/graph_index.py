"""Producers, consumers, constants and element types of one ONNX graph, for the static checks."""
from __future__ import annotations

from collections import defaultdict
from functools import cached_property

import onnx


def node_label(node: onnx.NodeProto) -> str:
    """How a problem names a node: ``/layers.0/self_attn/Softmax (Softmax)``."""
    return f"{node.name or '(unnamed)'} ({node.op_type})"


class GraphIndex:
    def __init__(self, graph: onnx.GraphProto):
        self.graph = graph
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for n in graph.node:
            for o in n.output:
                if o:
                    self.producer[o] = n
            for i in n.input:
                if i:
                    self.consumers[i].append(n)
        self.initializers = {t.name for t in graph.initializer}
        self.inputs = {i.name: i for i in graph.input}

    @cached_property
    def constants(self) -> set[str]:
        """Tensors known at build time: initializers, Constant outputs, and what is computed from them only."""
        known = set(self.initializers)
        for n in self.graph.node:                 # nodes are topologically sorted in a valid model
            if n.op_type == "Constant" or (n.input and all(i in known for i in n.input if i)):
                known.update(o for o in n.output if o)
        return known

    def is_constant(self, name: str) -> bool:
        return name in self.constants

    def scalar_constant(self, name: str) -> bool:
        """A constant with one element (a scale such as 1/sqrt(d))."""
        if not self.is_constant(name):
            return False
        for t in self.graph.initializer:
            if t.name == name:
                return _numel(t.dims) == 1
        p = self.producer.get(name)
        if p is not None and p.op_type == "Constant":
            value = next((a.t for a in p.attribute if a.name == "value"), None)
            return value is None or _numel(value.dims) == 1
        return True                               # folded from constants: shape unknown here, accept

    def elem_types(self, model: onnx.ModelProto) -> dict[str, int]:
        """tensor name -> ONNX element type, from shape inference (without loading external weights)."""
        g = onnx.shape_inference.infer_shapes(model).graph
        types = {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input, *g.output]}
        types.update({t.name: t.data_type for t in g.initializer})
        for n in g.node:
            if n.op_type == "Cast":
                to = next(a.i for a in n.attribute if a.name == "to")
                types.setdefault(n.output[0], to)
        return types


def _numel(dims) -> int:
    out = 1
    for d in dims:
        out *= d
    return out
