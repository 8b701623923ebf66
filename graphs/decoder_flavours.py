"""Which decoder flavour of a bundle each kind of target can run, and whether each keeps the contract.

    standard  decoder.onnx                  standard ONNX ops: TensorRT (its parser), CUDA, CPU
    fused     decoder_plain_<dtype>.onnx,   ONNX Runtime's com.microsoft ops: its CPU and CUDA providers
              decoder_steered_<dtype>.onnx  only (TensorRT's parser does not read that domain)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx

from .contracts import decoder_contract, plain_decoder_contract, steered_decoder_contract
from .manifest import Manifest

CONTRIB_DOMAIN = "com.microsoft"


@dataclass(frozen=True)
class Flavour:
    name: str                 # "standard" | "fused fp32 plain" | "fused fp16 steered" ...
    file: str
    runs_on: tuple[str, ...]  # the targets that can run it
    problems: tuple[str, ...]


def decoder_flavours(folder: Path, manifest: Manifest) -> list[Flavour]:
    out = []
    L = manifest.decoder.num_layers
    graphs = [("standard", manifest.graphs["decoder"], decoder_contract(L, manifest.has_attention_outputs))]
    for dtype, record in sorted((manifest.fused_decoders or {}).items()):
        if "plain" in record:       # the earlier one-graph layout is left to the standard decoder
            graphs += [(f"fused {dtype} plain", record["plain"], plain_decoder_contract(L)),
                       (f"fused {dtype} steered", record["steered"], steered_decoder_contract(L))]
    for name, file, contract in graphs:
        model = onnx.load(str(Path(folder) / file), load_external_data=False)
        problems = []
        inputs, outputs = [i.name for i in model.graph.input], [o.name for o in model.graph.output]
        if inputs != contract.input_names:
            problems.append(f"inputs {inputs} differ from the contract {contract.input_names}")
        if outputs != contract.output_names:
            problems.append(f"outputs {outputs} differ from the contract {contract.output_names}")
        contrib = any(n.domain == CONTRIB_DOMAIN for n in model.graph.node)
        runs_on = ("onnxruntime-cpu", "onnxruntime-cuda") if contrib else ("tensorrt", "onnxruntime-cuda",
                                                                           "onnxruntime-cpu")
        out.append(Flavour(name, file, runs_on, tuple(problems)))
    return out
