"""Which graphs of a Qwen2.5-VL / Qwen3-VL bundle TensorRT's ONNX parser could take: a static check.

TensorRT is not run (it needs its own install and a GPU): each graph is read and held against the
target release's parser table (``tensorrt_support.check_tensorrt``: opset, op domains, every op type,
the inputs it must see as constants) and the shape-input rule (``shape_inputs``); its inputs and outputs
against the manifest's IO records.  A "yes" is necessary, not sufficient (types, dynamic-shape limits and
the restrictions kept as text are not checked; no engine profile exists for Qwen graphs yet).

    vision, embed, decoder            what TensorRT would be given: a problem here fails the check (exit 1),
                                      a quantized decoder's too (MatMulNBits is com.microsoft; MatMulInteger and
                                      DynamicQuantizeLinear are not in the parser's table), as LLaVA's check does
    fused pair (plain, steered)       ONNX Runtime's com.microsoft ops (GroupQueryAttention, RotaryEmbedding,
                                      SkipSimplifiedLayerNormalization ...): TensorRT's parser does not read
                                      that domain; reported, never a failure (the pair is for ONNX Runtime)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx

from .decoder_flavours import CONTRIB_DOMAIN
from .qwen_manifest import QwenManifest
from .shape_inputs import shape_input_problems
from .tensorrt_support import check_tensorrt

GRAPH_ORDER = ("vision", "embed", "decoder")       # the order an answer runs them in


@dataclass(frozen=True)
class QwenGraphVerdict:
    graph: str                    # vision | embed | decoder | fused fp32 plain | fused fp32 steered
    file: str
    parser_takes_it: bool         # no problem against the parser table and the shape-input rule
    contract_ok: bool             # inputs and outputs as the manifest records them
    contrib_ops: tuple[str, ...]  # com.microsoft op types in the graph (ONNX Runtime only)
    problems: tuple[str, ...]     # every problem but the one-per-node "custom domain" of the contrib ops

    @property
    def fused(self) -> bool:
        return self.graph.startswith("fused")

    @property
    def fails(self) -> bool:
        """Off its contract, or a graph TensorRT would be given (vision, embed, decoder) that its parser refuses."""
        return not self.contract_ok or (not self.fused and not self.parser_takes_it)


def check_qwen_bundle(folder: Path, target: str) -> list[QwenGraphVerdict]:
    """One verdict per graph of the Qwen bundle at ``folder`` (QwenManifestError for a manifest that is not one)."""
    folder = Path(folder)
    m = QwenManifest.read(folder)
    order = sorted(m.graphs, key=lambda g: (GRAPH_ORDER.index(g) if g in GRAPH_ORDER else len(GRAPH_ORDER), g))
    graphs = [(name, m.graphs[name]["file"], m.input_names(name), m.output_names(name)) for name in order]
    for dtype, record in sorted((m.fused_decoders or {}).items()):
        for which in ("plain", "steered"):
            graphs.append((f"fused {dtype} {which}", record[which], None, None))
    verdicts = []
    for name, file, inputs, outputs in graphs:
        model = onnx.load(str(folder / file), load_external_data=False)
        parser = [*check_tensorrt(model, name, target).problems, *shape_input_problems(model)]
        contract = []
        got_in, got_out = [i.name for i in model.graph.input], [o.name for o in model.graph.output]
        if inputs is not None and got_in != inputs:
            contract.append(f"inputs {got_in} differ from the manifest's {inputs}")
        if outputs is not None and got_out != outputs:
            contract.append(f"outputs {got_out} differ from the manifest's {outputs}")
        contrib = tuple(sorted({n.op_type for n in model.graph.node if n.domain == CONTRIB_DOMAIN}))
        named = [p for p in parser if "custom domain" not in p]
        verdicts.append(QwenGraphVerdict(name, file, not parser, not contract, contrib, (*contract, *named)))
    return verdicts


def report_lines(verdicts: list[QwenGraphVerdict], family: str) -> list[str]:
    """What ``python -m graphs check`` prints for a Qwen bundle."""
    lines = [f"Qwen bundle ({family}): a static check against TensorRT's ONNX parser table; TensorRT itself was "
             f"not run (it is not installed here, and no engine is built for Qwen bundles yet)"]
    width = max(len(v.graph) for v in verdicts)
    for v in verdicts:
        if v.parser_takes_it:
            verdict = "TensorRT parser: yes"
        elif v.contrib_ops:
            verdict = (f"TensorRT parser: no (com.microsoft {', '.join(v.contrib_ops)}: ONNX Runtime's CPU/CUDA "
                       f"providers only)")
        else:
            verdict = f"TensorRT parser: no ({len(v.problems)} problems)"
        contract = "" if v.contract_ok else ", IO off the manifest"
        lines.append(f"{v.graph:{width}s}  {v.file}: {verdict}{contract}{'  FAIL' if v.fails else ''}")
        lines += [f"    - {p}" for p in v.problems]
    return lines
