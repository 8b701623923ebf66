"""Export a graph without its weights, then bind them from the live module one tensor at a time.

The TorchScript exporter, left to itself, holds a second copy of every weight: constant
folding computes each ``Linear``'s transposed weight as a new tensor, and the folded
tensors are serialised while the module's own weights are still alive (an fp16 export
peaked at ~3.3x the fp16 checkpoint).  Here the exporter only traces:

    torch module (weights in memory: the only full copy)
        |  torch.onnx.export(export_params=False, do_constant_folding=False); its shape
        |     inference sees no weight of HIDE_MIN_ELEMENTS or more (export/shape_inference.py)
        v
    <graph>.onnx: weights are graph inputs named by their state-dict keys,
                  each Linear's weight feeds a Transpose
        |  bind_weights: for each weight input, in graph order
        |     tensor -> numpy (its Transpose applied here when that is its only use)
        |     -> appended to <graph>.onnx_data (page aligned) -> an initializer pointing there
        |  fold_small_constants: the Unsqueeze/Concat/... of small constants the exporter
        |     would have folded (onnx's reference evaluator; weights are never read back)
        v
    <graph>.onnx + <graph>.onnx_data: the graph the folding exporter writes, same outputs

What this removes is the exporter's second copy of the weights (its folded transposes, serialised
while the module lives), and, with the weights hidden from its shape inference, the transient that
inference made of them (up to ~2 GB while the ``1b`` decoder was traced).  The parity check's
ONNX Runtime session, which on an x86 CPU casts every fp16 weight to fp32, is bounded apart:
``export/range_parity.py``.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from .errors import ExportError
from .external_data import _ALIGN, _point_to
from .shape_inference import weights_hidden_from_shape_inference

# Weights of at least this many elements are hidden from the exporter's shape inference; the
# smaller ones (norms, biases) stay visible, as they always were: nothing to save there.
HIDE_MIN_ELEMENTS = 1 << 16

# Constant subgraphs up to this many elements per input are folded (shapes, axes, scalars);
# weights are external data and never qualify.
_FOLD_MAX_ELEMENTS = 1 << 16
# Ops that are not pure functions of their inputs, or that would fold into big tensors.
_NEVER_FOLD = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli",
               "ConstantOfShape", "Expand", "Tile", "Range"}


@contextlib.contextmanager
def trace_only(hide_from: int | None = HIDE_MIN_ELEMENTS):
    """While this block runs, ``torch.onnx.export`` writes the graph without weights and folds nothing.

    ``hide_from``: the exporter's shape inference does not see the values of the weights of at least
    that many elements (``export/shape_inference.py``: the same graph, without its transients); None:
    it sees them all, as the exporter does by itself."""
    import torch

    original = torch.onnx.export

    def export_graph_only(*args, **kwargs):
        kwargs["export_params"] = False
        kwargs["do_constant_folding"] = False
        hidden = contextlib.nullcontext() if hide_from is None else weights_hidden_from_shape_inference(hide_from)
        with hidden:
            return original(*args, **kwargs)

    torch.onnx.export = export_graph_only
    try:
        yield
    finally:
        torch.onnx.export = original


def bind_weights(path: Path, module, keep_inputs: list[str]) -> int:
    """Turn every graph input of ``path`` that is not in ``keep_inputs`` into an initializer
    holding ``module``'s tensor of that name, written to ``<path>_data``; returns the bytes written."""
    path = Path(path)
    model = onnx.load(str(path), load_external_data=False)
    tensors = dict(module.named_parameters())
    tensors.update(dict(module.named_buffers()))
    graph = model.graph
    weights = [i.name for i in graph.input if i.name not in keep_inputs]
    unknown = [name for name in weights if name not in tensors]
    if unknown:
        raise ExportError(f"{path.name}: graph inputs {unknown[:5]} are neither contract inputs nor weights of "
                          f"{type(module).__name__}")
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    target = path.name + "_data"
    offset = 0
    dropped: list[onnx.NodeProto] = []
    with open(path.parent / target, "wb") as out:
        for name in weights:
            array = _numpy(tensors[name])
            users = consumers.get(name, [])
            transposes = [n for n in users if n.op_type == "Transpose"]
            if users and len(transposes) == len(users) and len({_perm(n, array.ndim) for n in users}) == 1:
                # [out, in] -> [in, out]: the weight as the MatMul reads it; the Transpose nodes go
                array = np.ascontiguousarray(array.transpose(_perm(users[0], array.ndim)))
                tensor_name = users[0].output[0]
                for extra in users[1:]:
                    _rename_input(graph, extra.output[0], tensor_name)
                dropped += users
            else:
                tensor_name = name
            data = memoryview(np.ascontiguousarray(array)).cast("B")    # no copy of a contiguous array
            tensor = onnx.TensorProto(name=tensor_name, data_type=_elem(array), dims=array.shape)
            padding = -offset % _ALIGN
            out.write(b"\0" * padding)
            offset += padding
            out.write(data)
            _point_to(tensor, target, offset, data.nbytes)
            offset += data.nbytes
            graph.initializer.append(tensor)
            del data, array
    keep = [i for i in graph.input if i.name in keep_inputs]
    del graph.input[:]
    graph.input.extend(keep)
    ids = {id(n) for n in dropped}
    nodes = [n for n in graph.node if id(n) not in ids]
    del graph.node[:]
    graph.node.extend(nodes)
    fold_small_constants(model)
    onnx.save(model, str(path))
    return offset


def fold_small_constants(model: onnx.ModelProto) -> int:
    """Replace nodes whose inputs are all small constants by Constant nodes; returns how many were folded."""
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    opsets = list(model.opset_import)
    values: dict[str, np.ndarray] = {}
    for init in graph.initializer:
        if init.data_location != onnx.TensorProto.EXTERNAL and _elements(init.dims) <= _FOLD_MAX_ELEMENTS:
            values[init.name] = numpy_helper.to_array(init)
    folded = 0
    nodes = []
    for node in graph.node:       # topological order: a folded output is known to the nodes after it
        if node.op_type == "Constant":
            value = _constant_value(node)
            if value is not None and value.size <= _FOLD_MAX_ELEMENTS:
                values[node.output[0]] = value
            nodes.append(node)
            continue
        inputs = [i for i in node.input if i]
        if (node.op_type in _NEVER_FOLD or node.domain not in ("", "ai.onnx") or not inputs
                or any(i not in values for i in inputs) or any(g.type == onnx.AttributeProto.GRAPH
                                                                for g in node.attribute)):
            nodes.append(node)
            continue
        single = onnx.helper.make_model(
            onnx.helper.make_graph([node], "fold", [onnx.helper.make_tensor_value_info(i, _elem(values[i]), None)
                                                    for i in dict.fromkeys(inputs)],
                                   [onnx.helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None)
                                    for o in node.output]),
            opset_imports=opsets, ir_version=model.ir_version)
        results = ReferenceEvaluator(single).run(None, {i: values[i] for i in dict.fromkeys(inputs)})
        for name, result in zip(node.output, results):
            result = np.asarray(result)
            values[name] = result
            nodes.append(onnx.helper.make_node("Constant", [], [name], value=numpy_helper.from_array(result, name),
                                               name=f"{node.name or node.op_type}_folded"))
        folded += 1
    del graph.node[:]
    graph.node.extend(_drop_unused_constants(nodes, graph))
    return folded


def _drop_unused_constants(nodes: list[onnx.NodeProto], graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    used = {o.name for o in graph.output}
    kept = []
    for node in reversed(nodes):
        if node.op_type == "Constant" and not any(o in used for o in node.output):
            continue
        used.update(node.input)
        kept.append(node)
    return kept[::-1]


def _constant_value(node: onnx.NodeProto) -> np.ndarray | None:
    for attr in node.attribute:
        if attr.name == "value":
            return numpy_helper.to_array(attr.t)
        if attr.name in ("value_int", "value_float"):
            return np.array(onnx.helper.get_attribute_value(attr),
                            dtype=np.int64 if attr.name == "value_int" else np.float32)
        if attr.name in ("value_ints", "value_floats"):
            return np.array(onnx.helper.get_attribute_value(attr),
                            dtype=np.int64 if attr.name == "value_ints" else np.float32)
    return None


def _elem(array: np.ndarray) -> int:
    return onnx.helper.np_dtype_to_tensor_dtype(array.dtype)


def _elements(dims) -> int:
    return int(np.prod(list(dims))) if len(dims) else 1


def _perm(node: onnx.NodeProto, ndim: int) -> tuple[int, ...]:
    for attr in node.attribute:
        if attr.name == "perm":
            return tuple(attr.ints)
    return tuple(range(ndim))[::-1]


def _rename_input(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name == old:
                node.input[k] = new
    for out in graph.output:
        if out.name == old:
            raise ExportError(f"a transposed weight {old!r} is a graph output; cannot fold it")


def _numpy(tensor) -> np.ndarray:
    import torch

    tensor = tensor.detach()
    if tensor.dtype == torch.bfloat16:
        raise ExportError("bfloat16 weights: export as fp32 or fp16")
    return tensor.cpu().numpy()
