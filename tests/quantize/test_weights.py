"""What the quantized graphs hold: which MatMuls became MatMulNBits, and what stayed fp32.

The image-key scaling (the Where that picks alpha per key and the Mul on the logits), the mask
and the softmax are checked node by node against the source graph.
"""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from graphs.__main__ import check_bundle
from graphs.contracts import IMAGE_ATTENTION_SCALE
from graphs.precision import fp16_unsafe_nodes
from quantize import graph as G
from quantize.weights import drop_round_trips, elem_types, half_inputs

from .conftest import PRECISIONS


def _decoder(folder) -> onnx.ModelProto:
    model = onnx.load(str(folder / "decoder.onnx"))
    G.name_nodes(model.graph)
    return model


def _typed(model: onnx.ModelProto) -> onnx.ModelProto:
    return onnx.shape_inference.infer_shapes(model)


@pytest.mark.parametrize("to", ["int8", "int4"])
def test_every_weight_matmul_but_the_lm_head_becomes_matmulnbits(quantized_dir, bundle_dir, size, to):
    source = _decoder(bundle_dir(size))
    index = G.Index(source.graph)
    weights = G.weight_matmuls(index)
    head = G.lm_head(index)
    assert head == "/lm_head/MatMul" and len(weights) == 15          # q k v o gate up down x 2 layers + LM head
    model = _decoder(quantized_dir(size, to))
    nbits = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    assert len(nbits) == 14                                          # nothing skipped but the LM head
    bits = {"int8": 8, "int4": 4}[to]
    hidden = json.loads((bundle_dir(size) / "manifest.json").read_text())["decoder"]["hidden_size"]
    for n in nbits:
        attrs = {a.name: a.i for a in n.attribute}
        assert attrs["bits"] == bits and attrs["block_size"] == 32
        assert attrs["K"] in (hidden, 2 * hidden)
        assert attrs.get("accuracy_level") == 4                              # the default: int8 arithmetic
    left = [n for n in model.graph.node if n.op_type == "MatMul"]
    assert head in {n.name for n in left}                            # the LM head, and the weightless QK / PV / rotary
    inits = {t.name: t for t in model.graph.initializer}
    lm = next(n for n in left if n.name == head)
    assert inits[lm.input[1]].data_type == TensorProto.FLOAT
    record = json.loads((quantized_dir(size, to) / "manifest.json").read_text())["quantization"]["graphs"]
    assert record["decoder"]["matmulnbits"] == 14 and list(record["decoder"]["skipped"]) == [head]
    assert record["vision"] == {"copied": True} and record["embed"] == {"copied": True}


@pytest.mark.parametrize("symmetric", [False, True])
def test_int8_dynamic_turns_every_weight_matmul_but_the_lm_head_into_matmulinteger(quantized_dir, bundle_dir, size,
                                                                                    symmetric):
    source = _decoder(bundle_dir(size))
    head = G.lm_head(G.Index(source.graph))
    folder = quantized_dir(size, "int8-dynamic", symmetric=symmetric)
    model = _decoder(folder)
    integer = [n for n in model.graph.node if n.op_type == "MatMulInteger"]
    assert len(integer) == 14                                        # q k v o gate up down x 2 layers
    inits = {t.name: t for t in model.graph.initializer}
    layers = json.loads((bundle_dir(size) / "manifest.json").read_text())["decoder"]
    for n in integer:
        weight = inits[n.input[1]]
        assert weight.data_type == (TensorProto.INT8 if symmetric else TensorProto.UINT8)
        assert inits[n.input[3]].dims[0] == weight.dims[1]          # one zero point per output channel
        values = onnx.numpy_helper.to_array(weight).astype(int)
        if symmetric:      # 7 bits (reduce_range): 2 x 255 x 64 fits int16, so no u8 x s8 pair saturates
            assert np.abs(values).max() <= 64
        assert weight.dims[0] in (layers["hidden_size"], 2 * layers["hidden_size"])
    activations = [n for n in model.graph.node if n.op_type == "DynamicQuantizeLinear"]
    assert len(activations) >= 7 * 2 // 3                            # shared by q/k/v and gate/up where the input is one
    head_node = next(n for n in model.graph.node if n.name == head)
    assert head_node.op_type == "MatMul" and inits[head_node.input[1]].data_type == TensorProto.FLOAT
    q = json.loads((folder / "manifest.json").read_text())["quantization"]
    assert (q["precision"], q["bits"], q["block_size"], q["accuracy_level"], q["symmetric"]) == \
           ("int8-dynamic", 8, None, None, symmetric)
    assert q["tool"] == "onnxruntime.quantization.quantize_dynamic"
    assert q["graphs"]["decoder"]["matmulinteger"] == 14 and list(q["graphs"]["decoder"]["skipped"]) == [head]
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]   # the tool's scratch folder is gone


def test_k_not_a_multiple_of_the_block_is_padded_not_skipped(quantized_dir):
    # tiny-mha is 48 wide: K = 48 is one and a half blocks of 32; MatMulNBits zero-pads it.
    record = json.loads((quantized_dir("tiny-mha", "int4") / "manifest.json").read_text())["quantization"]
    assert record["graphs"]["decoder"]["matmulnbits"] == 14
    assert len(record["graphs"]["decoder"]["k_padded"]) == 12        # all but the two down_proj (K = 96)


def test_options_reach_the_nodes(quantized_dir):
    folder = quantized_dir("tiny", "int4", block_size=128, symmetric=True, accuracy_level=4, lm_head=True, vision=True)
    for graph, count in (("decoder", 15), ("vision", 14)):
        model = onnx.load(str(folder / f"{graph}.onnx"))
        nbits = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
        assert len(nbits) == count
        for n in nbits:
            attrs = {a.name: a.i for a in n.attribute}
            assert attrs["block_size"] == 128 and attrs["accuracy_level"] == 4
            assert len(n.input) == 3                                 # symmetric: no zero points
    q = json.loads((folder / "manifest.json").read_text())["quantization"]
    assert (q["bits"], q["block_size"], q["symmetric"], q["accuracy_level"], q["lm_head"]) == (4, 128, True, 4, "quantized")


def test_fp16_keeps_the_fragile_ops_and_the_io_in_fp32(quantized_dir, bundle_dir, size):
    source = _decoder(bundle_dir(size))
    model = _decoder(quantized_dir(size, "fp16"))
    assert fp16_unsafe_nodes(model) == []
    assert [(i.name, i.type.tensor_type.elem_type) for i in model.graph.input] == \
           [(i.name, i.type.tensor_type.elem_type) for i in source.graph.input]
    assert [(o.name, o.type.tensor_type.elem_type) for o in model.graph.output] == \
           [(o.name, o.type.tensor_type.elem_type) for o in source.graph.output]
    kept = G.kept_fp32(G.Index(source.graph))
    assert half_inputs(model.graph, kept) == []
    half = [t for t in model.graph.initializer if t.data_type == TensorProto.FLOAT16]
    assert len(half) == 14                                           # the projections; the LM head stays fp32
    head = next(n for n in model.graph.node if n.name == "/lm_head/MatMul")
    assert elem_types(model.graph)[head.input[1]] == TensorProto.FLOAT
    # Nothing an fp16 graph must avoid, and TensorRT can still read it.
    assert check_bundle(quantized_dir(size, "fp16")) == {"vision": [], "embed": [], "decoder": []}


@pytest.mark.parametrize("to", PRECISIONS)
def test_the_image_attention_scale_path_is_untouched_and_fp32(quantized_dir, bundle_dir, size, to):
    source = _decoder(bundle_dir(size))
    model = _typed(_decoder(quantized_dir(size, to)))
    src_path = G.steering_path(G.Index(source.graph))
    path = G.steering_path(G.Index(model.graph))
    src_nodes = {n.name: n for n in source.graph.node if n.name in src_path}
    nodes = {n.name: n for n in model.graph.node if n.name in path}
    assert {k: n.op_type for k, n in nodes.items()} == {k: n.op_type for k, n in src_nodes.items()}
    layers = json.loads((bundle_dir(size) / "manifest.json").read_text())["decoder"]["num_layers"]
    ops = [n.op_type for n in nodes.values()]
    assert ops.count("Softmax") == layers * _softmaxes_per_layer(bundle_dir(size)) and ops.count("Mul") >= layers and ops.count("Where") >= layers
    if to != "fp16":      # weight-only: the path is the source's, node for node
        assert all(nodes[k] == src_nodes[k] for k in nodes)
    types = elem_types(model.graph)
    checked = []
    for n in nodes.values():       # every float tensor in or out of the path is float32
        floats = [types.get(t) for t in [*n.input, *n.output] if types.get(t) in (TensorProto.FLOAT, TensorProto.FLOAT16)]
        assert all(t == TensorProto.FLOAT for t in floats), n.name
        checked += [n.op_type] if floats else []
    if to == "fp16":               # (onnx infers no types past a com.microsoft MatMulNBits: those paths are compared above)
        assert checked.count("Mul") >= layers and checked.count("Where") >= layers + 1 and "Softmax" in checked
    # alpha enters the graph as float32 and is read as it is: no rounding Cast on the way.
    index = G.Index(model.graph)
    readers = index.consumers[IMAGE_ATTENTION_SCALE]
    assert readers and all(r.name in path and r.op_type != "Cast" for r in readers)
    assert not any(n.op_type in ("MatMulNBits", "MatMulInteger", "DynamicQuantizeLinear") for n in nodes.values())


def _softmaxes_per_layer(bundle) -> int:
    """scaled-logits: the attention's softmax; scaled-keys: that one and the last row's read-out (graphs.attention_form)."""
    form = json.loads((bundle / "manifest.json").read_text()).get("attention_form", "scaled-logits")
    return 2 if form == "scaled-keys" else 1


def test_structure_is_found_without_node_names(bundle_dir):
    model = _decoder(bundle_dir("tiny"))
    for i, n in enumerate(model.graph.node):
        n.name = f"n{i}"
    index = G.Index(model.graph)
    assert sum(index.nodes[k].op_type == "ReduceMean" for k in G.rmsnorm_nodes(index)) == 5   # 2 x 2 layers + final
    assert sum(index.nodes[k].op_type == "Softmax" for k in G.steering_path(index)) == 2 * _softmaxes_per_layer(
        bundle_dir("tiny"))
    assert {index.nodes[k].op_type for k in G.rotary_path(index)} >= {"Cos", "Sin", "MatMul"}
    assert index.nodes[G.lm_head(index)].output[0] == "logits"
    assert {o for k in G.attention_readout(index) for o in index.nodes[k].output} >= \
           {o.name for o in model.graph.output if o.name in ("last_row_attention", "image_attention_share")}


def test_round_trip_casts_are_removed_and_real_casts_kept():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT16, [2])
    nodes = [helper.make_node("Cast", ["x"], ["h"], to=TensorProto.FLOAT16, name="down"),
             helper.make_node("Cast", ["h"], ["f"], to=TensorProto.FLOAT, name="up"),
             helper.make_node("Relu", ["f"], ["y"], name="relu"),
             helper.make_node("Neg", ["h"], ["z"], name="neg")]
    vi = [helper.make_tensor_value_info("h", TensorProto.FLOAT16, [2]),
          helper.make_tensor_value_info("f", TensorProto.FLOAT, [2])]
    graph = helper.make_graph(nodes, "g", [x], [y, z], value_info=vi)
    assert drop_round_trips(graph) == 1
    assert [n.name for n in graph.node] == ["down", "relu", "neg"]      # "down" still feeds an fp16 reader
    assert list(graph.node[1].input) == ["x"]
    graph.node.pop()                                                     # without the fp16 reader ...
    graph.output.pop()
    assert drop_round_trips(graph) == 1 and [n.name for n in graph.node] == ["relu"]   # ... the downcast is dead


def test_topological_sort_puts_producers_first():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    nodes = [helper.make_node("Add", ["a", "a"], ["y"], name="add"), helper.make_node("Relu", ["x"], ["a"], name="relu")]
    graph = helper.make_graph(nodes, "g", [x], [y])
    G.topological_sort(graph)
    assert [n.name for n in graph.node] == ["relu", "add"]
