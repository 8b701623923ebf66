"""Check that an fp16 graph keeps its numerically fragile ops in fp32.

- Softmax: exp() of large logits overflows fp16.
- The norms: RMSNorm's ``mean(x^2)`` (Pow, ReduceMean) of activations in the hundreds overflows
  fp16's 65504, and the one-op norms (LayerNormalization, RMSNormalization, ...) likewise.
- The image-key scaling: the Mul that applies ``image_attention_scale`` (on the logits, or on
  the image keys), found as a Mul/Div with an operand computed from ``image_attention_scale``
  by indexing ops only (Gather, Unsqueeze, Where, Cast, ...): alpha and what it multiplies
  must be float32 there, whatever the graph's dtype.

Everything else may be fp16.  A graph without fp16 tensors passes trivially.
"""
from __future__ import annotations

from collections import deque

import onnx

from .contracts import IMAGE_ATTENTION_SCALE
from .graph_index import GraphIndex, node_label

NORM_OPS = ("LayerNormalization", "RMSNormalization", "SimplifiedLayerNormalization", "SkipLayerNormalization",
            "SkipSimplifiedLayerNormalization", "GroupNormalization", "InstanceNormalization")
FRAGILE_OPS = ("Softmax", "ReduceMean", "Pow", *NORM_OPS)
# Ops that move or pick alpha without computing with it: the steering factor flows through them.
_INDEXING = {"Gather", "GatherElements", "Unsqueeze", "Squeeze", "Reshape", "Cast", "Where", "Expand", "Slice",
             "Transpose", "Identity", "Concat", "Tile"}
_HALF = onnx.TensorProto.FLOAT16


def steering_factors(index: GraphIndex) -> set[str]:
    """Tensors computed from ``image_attention_scale`` by indexing ops only (alpha per key, per head)."""
    found = {IMAGE_ATTENTION_SCALE}
    queue = deque([IMAGE_ATTENTION_SCALE])
    while queue:
        for n in index.consumers.get(queue.popleft(), ()):
            if n.op_type in _INDEXING:
                for o in n.output:
                    if o and o not in found:
                        found.add(o)
                        queue.append(o)
    return found


def steering_multiplies(index: GraphIndex) -> list[onnx.NodeProto]:
    """The Mul/Div nodes that apply the image-attention scale to data."""
    factors = steering_factors(index)
    return [n for n in index.graph.node if n.op_type in ("Mul", "Div") and any(i in factors for i in n.input)]


def fp16_problems(model: onnx.ModelProto) -> list[str]:
    """Each fragile node that computes in fp16, named, with why (empty = safe)."""
    return [f"{node_label(n)}: {why}" for n, why in _unsafe(model)]


def fp16_unsafe_nodes(model: onnx.ModelProto) -> list[str]:
    """``"<op> <name>"`` of each fragile node computing in fp16 (empty = safe)."""
    return [f"{n.op_type} {n.name}" for n, _ in _unsafe(model)]


def _unsafe(model: onnx.ModelProto) -> list[tuple[onnx.NodeProto, str]]:
    index = GraphIndex(model.graph)
    types = index.elem_types(model)
    found = [(n, "runs on float16 input; softmax and norms must run in float32 in an fp16 graph")
             for n in model.graph.node
             if n.op_type in FRAGILE_OPS and n.input and types.get(n.input[0]) == _HALF]
    found += [(n, "the image-key scaling runs in float16; it must run in float32")
              for n in steering_multiplies(index) if any(types.get(t) == _HALF for t in (*n.input, *n.output))]
    return found
