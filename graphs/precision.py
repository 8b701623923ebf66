"""Check that an fp16 graph keeps its numerically fragile ops in fp32.

Softmax (exp of large logits overflows fp16) and the RMSNorm reduction
(``mean(x^2)`` of activations in the hundreds overflows fp16's 65504) must run
on float32 tensors; everything else may be fp16.
"""
from __future__ import annotations

import onnx

FRAGILE_OPS = ("Softmax", "ReduceMean", "Pow")


def fp16_unsafe_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of Softmax/ReduceMean/Pow nodes whose first input is float16 (empty = safe)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    elem = {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input, *g.output]}
    elem.update({t.name: t.data_type for t in g.initializer})
    return [f"{n.op_type} {n.name}" for n in g.node
            if n.op_type in FRAGILE_OPS and elem.get(n.input[0]) == onnx.TensorProto.FLOAT16]
