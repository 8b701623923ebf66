"""A one-node ONNX model that hands a prebuilt engine to ONNX Runtime's TensorRT provider.

ONNX Runtime's documented way to run an engine it did not build: an ``EPContext`` node (domain
``com.microsoft``) whose inputs and outputs are the graph's, with ``embed_mode=0`` and
``ep_cache_context`` = the engine's file name, relative to the context model (the provider refuses
absolute paths and ``..``).  The provider deserializes that engine instead of building one.  The
graph inputs and outputs (names, element types, symbolic dims) are copied from the bundle's graph, so
the runtime's contract check and IO binding see the same session as without engines.

Needs ``onnx`` (the ``tensorrt`` extra): only the builder writes these files.
"""
from __future__ import annotations

from pathlib import Path

EP_SOURCE = "TensorrtExecutionProvider"


def write_context_model(graph_path: Path, engine_name: str, out: Path, compute_capability: str) -> Path:
    import onnx
    from onnx import helper

    source = onnx.load(str(graph_path), load_external_data=False)
    weights = {t.name for t in source.graph.initializer}
    inputs = [i for i in source.graph.input if i.name not in weights]
    outputs = list(source.graph.output)
    node = helper.make_node(
        "EPContext", [i.name for i in inputs], [o.name for o in outputs], name=f"{Path(graph_path).stem}_tensorrt",
        domain="com.microsoft", embed_mode=0, ep_cache_context=engine_name,
        hardware_architecture=compute_capability.replace(".", ""),     # ONNX Runtime writes "87" for sm87
        source=EP_SOURCE)
    graph = helper.make_graph([node], f"{Path(graph_path).stem}_engine", inputs, outputs)
    default_opset = next((o.version for o in source.opset_import if o.domain in ("", "ai.onnx")), 17)
    model = helper.make_model(graph, producer_name="adaptvis-edge engines",
                              opset_imports=[helper.make_opsetid("", default_opset), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = source.ir_version
    onnx.save(model, str(out))
    return Path(out)
