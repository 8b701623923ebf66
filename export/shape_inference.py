"""The TorchScript exporter's ONNX shape inference, run without the weights' values.

Tracing a graph without its weights (``trace_only``) still cost a transient of up to ~2 GB on the
``1b`` decoder, in ``_jit_pass_onnx_graph_shape_type_inference`` (run twice per export).  That pass
is handed ``params_dict``, the module's weights by graph-input name, and treats them as known
values: each node whose input is a weight is cloned into a one-node graph with that weight as a
Constant (serialised into an ONNX proto, full size, for onnx's shape inference), and constant
results such as each Linear's transposed weight are kept until the pass ends.  Measured on a
1024-wide 8-layer fp16 decoder (0.25 GB of weights): +0.35 GB over the traced module, gone when
the weights are hidden.

    torch.onnx.export(export_params=False)
        |  ... _jit_pass_onnx_graph_shape_type_inference(graph, params_dict, opset)
        |        params_dict without the tensors of >= min_elements elements:
        |        they stay graph inputs whose type and shape the trace already recorded
        v
    the same graph, byte for byte (tests/export/test_bound_weights.py)

No weight decides a shape, so the inference has nothing to learn from their values.  Zero-stride
placeholder weights (a stand-in of one element per tensor) do not help here: the one-node graphs
serialise every element of a Constant whatever its strides, and a Linear over a zero-stride fp16
weight takes a naive kernel (the vision trace of the ``small`` fixture: 33 s instead of 3 s).
"""
from __future__ import annotations

import contextlib

_PASS = "_jit_pass_onnx_graph_shape_type_inference"


@contextlib.contextmanager
def weights_hidden_from_shape_inference(min_elements: int):
    """While the block runs, the exporter's shape inference sees no tensor of ``min_elements`` or more.

    Yields False (and changes nothing) where this torch has no such pass to wrap."""
    import torch

    original = getattr(torch._C, _PASS, None)
    if original is None:
        yield False
        return

    def without_weights(graph, params_dict, opset_version):
        kept = {name: value for name, value in params_dict.items()
                if not (isinstance(value, torch.Tensor) and value.numel() >= min_elements)}
        return original(graph, kept, opset_version)

    setattr(torch._C, _PASS, without_weights)
    try:
        yield True
    finally:
        setattr(torch._C, _PASS, original)
