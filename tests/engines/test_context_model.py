"""The EPContext model that points ONNX Runtime's TensorRT provider at an engine (written without TensorRT:
only its structure is checked here; loading it needs the provider and a GPU: test_engine_parity.py)."""
from __future__ import annotations

import onnx
from onnx import helper

from engines.context_model import write_context_model
from graphs.manifest import Manifest


def test_context_model_has_the_graphs_inputs_and_outputs_and_names_the_engine(size, bundle_dir, tmp_path):
    folder = bundle_dir(size)
    m = Manifest.read(folder)
    for graph in ("vision", "embed", "decoder"):
        source = onnx.load(str(folder / m.graphs[graph]), load_external_data=False)
        out = write_context_model(folder / m.graphs[graph], f"{graph}.engine", tmp_path / f"{graph}_ctx.onnx", "8.7")
        model = onnx.load(str(out))
        (node,) = model.graph.node
        assert (node.op_type, node.domain) == ("EPContext", "com.microsoft")
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["embed_mode"] == 0 and attrs["ep_cache_context"] == f"{graph}.engine".encode()
        assert attrs["hardware_architecture"] == b"87" and attrs["source"] == b"TensorrtExecutionProvider"
        weights = {t.name for t in source.graph.initializer}
        assert [i.name for i in model.graph.input] == [i.name for i in source.graph.input if i.name not in weights]
        assert [o.name for o in model.graph.output] == [o.name for o in source.graph.output] == m.outputs[graph]
        assert list(node.input) == [i.name for i in model.graph.input]
        for a, b in zip(model.graph.input, (i for i in source.graph.input if i.name not in weights)):
            assert a.type == b.type                      # element type and (symbolic) dims unchanged
        assert {o.domain for o in model.opset_import} == {"", "com.microsoft"}
        assert out.stat().st_size < 100_000              # no weights inside
