"""Static TensorRT compatibility check of an ONNX graph, for machines without a GPU.

Engine building and ``polygraphy inspect capability`` need a GPU; this reads the
graph only: opset, operator domains, and operator types against the support
matrix of onnx-tensorrt (``docs/operators.md``) for TensorRT 10.3, the release on
JetPack 6.  A pass here is necessary, not sufficient: TensorRT's per-op
restrictions (e.g. "axes must be an initializer") are checked where listed below.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import onnx

MAX_OPSET_TRT_10_3 = 20

# Operators of onnx-tensorrt's support matrix that exported LLaVA graphs can contain
# (LayerNormalization: TensorRT >= 8.6).  Anything else fails the check and must be
# looked up before it ships.
SUPPORTED_OPS = frozenset("""
Abs Add And ArgMax Cast Ceil Clip Concat Constant ConstantOfShape Conv Cos Div Einsum Equal Erf Exp
Expand Flatten Floor Gather GatherElements GatherND Gemm Greater GreaterOrEqual Identity If
LayerNormalization Less LessOrEqual Log LogSoftmax MatMul Max Mean Min Mul Neg Not Or Pad Pow Range
ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum Relu Reshape Resize ScatterElements ScatterND Shape
Sigmoid Sign Sin Size Slice Softmax Split Sqrt Squeeze Sub Sum Tanh Tile TopK Transpose Trilu Unsqueeze
Where Xor
""".split())

# Inputs that TensorRT requires to be constant (initializers / Constant outputs).
_CONSTANT_INPUTS = {"Slice": (3,), "Squeeze": (1,), "Unsqueeze": (1,), "TopK": (1,), "ReduceMean": (1,),
                    "ReduceSum": (1,), "ReduceMax": (1,)}


@dataclass
class CompatibilityReport:
    graph: str
    opset: int
    op_counts: dict[str, int]
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_tensorrt(model: onnx.ModelProto, graph: str = "graph") -> CompatibilityReport:
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    report = CompatibilityReport(graph, opset, dict(sorted(counts.items())))
    if opset > MAX_OPSET_TRT_10_3:
        report.problems.append(f"opset {opset} > {MAX_OPSET_TRT_10_3}: TensorRT 10.3 (JetPack 6) cannot parse it")
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            report.problems.append(f"node {node.name or node.op_type} is in custom domain {node.domain!r}")
    unsupported = sorted(set(counts) - SUPPORTED_OPS)
    if unsupported:
        report.problems.append(f"operators outside TensorRT 10.3's support matrix: {', '.join(unsupported)}")
    constants = {i.name for i in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    for node in model.graph.node:
        for index in _CONSTANT_INPUTS.get(node.op_type, ()):
            if index < len(node.input) and node.input[index] and node.input[index] not in constants:
                report.problems.append(f"{node.op_type} {node.name}: input {index} ({node.input[index]}) must be "
                                       f"constant for TensorRT")
    return report
