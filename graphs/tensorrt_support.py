"""Static TensorRT compatibility check of an ONNX graph, for machines without a GPU.

Engine building and ``polygraphy inspect capability`` need a GPU; this reads the
graph only: the opset, the operator domains, every node's operator type against the
ONNX parser's support table of the target TensorRT release, and the inputs that table
says must be constant (``graphs/tensorrt_tables.py``: onnx-tensorrt's ``docs/operators.md``
per release, checked in under ``graphs/tensorrt_ops/``).  A pass here is necessary, not
sufficient: type support, dynamic-shape limits and the restrictions kept as text are not checked.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import onnx
from onnx import defs

from .graph_index import GraphIndex, node_label
from .tensorrt_tables import DEFAULT_TARGET, Target, load_target


@dataclass
class CompatibilityReport:
    graph: str
    target: str
    opset: int
    op_counts: dict[str, int]
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_tensorrt(model: onnx.ModelProto, graph: str = "graph", target: str | Target = DEFAULT_TARGET
                   ) -> CompatibilityReport:
    """Every node of ``model`` against ``target``'s parser table; problems name the node and the op."""
    t = load_target(target) if isinstance(target, str) else target
    release = f"TensorRT {t.tensorrt} ({t.name})"
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    report = CompatibilityReport(graph, t.name, opset, dict(sorted(counts.items())))
    if opset > t.opset_max:
        report.problems.append(f"opset {opset} > {t.opset_max}: {release} cannot parse it")
    index = GraphIndex(model.graph)
    for node in model.graph.node:
        label = node_label(node)
        if node.domain not in ("", "ai.onnx"):
            report.problems.append(f"{label}: custom domain {node.domain!r}, outside the ONNX parser's table")
            continue
        if node.op_type not in t.supported:
            report.problems.append(f"{label}: operator not supported by {release}'s ONNX parser")
            continue
        for name in t.constant_inputs.get(node.op_type, ()):
            i = _input_index(node.op_type, name, opset)
            if i is not None and i < len(node.input) and node.input[i] and not index.is_constant(node.input[i]):
                report.problems.append(f"{label}: input {name!r} ({node.input[i]}) must be constant for {release} "
                                       f"({t.supported[node.op_type]['restrictions']})")
    return report


def _input_index(op: str, name: str, opset: int) -> int | None:
    try:
        schema = defs.get_schema(op, opset)
    except Exception:            # an op ONNX itself does not know at this opset: nothing to map
        return None
    names = [i.name for i in schema.inputs]
    return names.index(name) if name in names else None
