"""consolidate(): per-tensor external data files become one page-aligned data file, outputs unchanged."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from export.external_data import consolidate


def _matmul_chain(path, weights):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])
    inits = [numpy_helper.from_array(w, f"w{i}") for i, w in enumerate(weights)]
    nodes, prev = [], "x"
    for i in range(len(weights)):
        out = "y" if i == len(weights) - 1 else f"h{i}"
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [out]))
        prev = out
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits), opset_imports=[helper.make_opsetid("", 18)],
                              ir_version=9)
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=False, size_threshold=0)


def test_consolidate_gathers_one_file_and_keeps_outputs(tmp_path):
    rng = np.random.default_rng(0)
    weights = [rng.standard_normal((8, 8)).astype(np.float32) for _ in range(3)]
    path = tmp_path / "g.onnx"
    _matmul_chain(path, weights)
    assert len(list(tmp_path.iterdir())) == 4            # the graph + one file per weight
    x = rng.standard_normal((1, 8)).astype(np.float32)
    before = ort.InferenceSession(str(path)).run(None, {"x": x})[0]

    assert consolidate(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.onnx", "g.onnx_data"]
    after = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    np.testing.assert_array_equal(before, after)
    np.testing.assert_allclose(after, x @ weights[0] @ weights[1] @ weights[2], rtol=1e-5)
    offsets = [int(e.value) for t in onnx.load(str(path), load_external_data=False).graph.initializer
               for e in t.external_data if e.key == "offset"]
    assert all(o % 4096 == 0 for o in offsets)


def test_a_graph_without_external_data_is_left_alone(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    path = tmp_path / "plain.onnx"
    onnx.save(helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]), ir_version=9),
              str(path))
    before = path.read_bytes()
    assert consolidate(path) is False
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["plain.onnx"]
