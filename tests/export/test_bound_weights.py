"""Weights bound after tracing (the default export): the same graphs and outputs as the exporter's own folding."""
from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from export import export_llava
from export.bound_weights import fold_small_constants


def _ops(path):
    return Counter(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node)


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_bound_weights_give_the_folding_exporters_graphs_and_outputs(tmp_path, checkpoint_dir, dtype):
    folded, bound = tmp_path / "folded", tmp_path / "bound"
    export_llava(str(checkpoint_dir("tiny")), folded, dtype=dtype, bound_weights=False, log=lambda m: None)
    export_llava(str(checkpoint_dir("tiny")), bound, dtype=dtype, bound_weights=True, log=lambda m: None)
    rng = np.random.default_rng(0)
    for graph in ("vision", "embed", "decoder"):
        assert _ops(folded / f"{graph}.onnx") == _ops(bound / f"{graph}.onnx"), graph
        assert (bound / f"{graph}.onnx_data").is_file()          # weights beside the graph, not inside it
        a = ort.InferenceSession(str(folded / f"{graph}.onnx"))
        b = ort.InferenceSession(str(bound / f"{graph}.onnx"))
        feeds = {}
        for i in a.get_inputs():
            shape = [d if isinstance(d, int) else (0 if "past" in i.name else 3) for d in i.shape]
            if "int64" in i.type:
                feeds[i.name] = np.ones(shape, np.int64)
            elif "bool" in i.type:
                feeds[i.name] = rng.random(shape) < 0.5
            else:
                feeds[i.name] = rng.standard_normal(shape).astype(np.float16 if "float16" in i.type else np.float32)
        if graph == "decoder":
            feeds["position_ids"] = np.arange(3, dtype=np.int64)[None]
        for x, y in zip(a.run(None, feeds), b.run(None, feeds)):
            np.testing.assert_array_equal(x, y)


def test_small_constant_subgraphs_fold_and_the_rest_stays():
    axes = numpy_helper.from_array(np.array([0], np.int64), "axes")
    nodes = [helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.array([2.0], np.float32))),
             helper.make_node("Unsqueeze", ["c", "axes"], ["c2"]),          # constant: folds
             helper.make_node("Mul", ["x", "c2"], ["y"])]                   # depends on the input: stays
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])], [axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    assert fold_small_constants(model) == 1
    assert [n.op_type for n in model.graph.node] == ["Constant", "Mul"]
    out = ort.InferenceSession(model.SerializeToString()).run(None, {"x": np.array([[3.0]], np.float32)})[0]
    np.testing.assert_array_equal(out, [[6.0]])


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_shape_inference_without_the_weights_writes_the_same_graph(tmp_path, checkpoint_dir, dtype):
    """The trace with every weight hidden from the exporter's shape inference (no transients) writes the
    graph of the trace that shows them, byte for byte, before any weight is bound."""
    import warnings

    import torch
    from optimum.exporters.onnx import export
    from transformers import LlavaForConditionalGeneration

    from export.bound_weights import trace_only
    from export.onnx_configs import DecoderOnnxConfig, EmbedOnnxConfig, VisionOnnxConfig
    from export.shape_inference import weights_hidden_from_shape_inference
    from export.wrappers import SteeredDecoder, TokenEmbedding, VisionEncoder

    with weights_hidden_from_shape_inference(1) as wrapped:
        assert wrapped, "this torch has no _jit_pass_onnx_graph_shape_type_inference to wrap"
    model = LlavaForConditionalGeneration.from_pretrained(
        checkpoint_dir("tiny"), dtype=torch.float16 if dtype == "fp16" else torch.float32,
        attn_implementation="eager").eval()
    parts = {"vision": (VisionEncoder(model), VisionOnnxConfig(model.config, dtype)),
             "embed": (TokenEmbedding(model), EmbedOnnxConfig(model.config.text_config, dtype)),
             "decoder": (SteeredDecoder(model), DecoderOnnxConfig(model.config.text_config, dtype))}
    for name, (part, config) in parts.items():
        written = {}
        for hide_from in (None, 1):              # None: the exporter sees every weight; 1: it sees none
            path = tmp_path / f"{name}-{hide_from}.onnx"
            with trace_only(hide_from), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                export(part, config, path, opset=18, disable_dynamic_axes_fix=True)
            written[hide_from] = path.read_bytes()
        assert written[None] == written[1], name
