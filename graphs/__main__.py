"""python -m graphs check BUNDLE [--target jetpack6|jetpack7|desktop]: a bundle's graphs against their
contracts and against what TensorRT's ONNX parser takes, without a GPU.

Per graph: inputs/outputs = the contract; the opset and every op in the target release's parser
table, with its constant-input restrictions; no integer scalar input feeding a shape operand;
every dynamic input dim covered by the TensorRT profiles; in fp16 graphs softmax, the norms and
the image-key scaling in float32.  Each problem names the graph, the node, its op type and why;
any problem exits 1.  Then, for information, whether each decoder layer's attention is in a form
fused attention kernels can take (``graphs/attention_form.py``), and which decoder flavour (standard,
fused) each kind of target can run (``graphs/decoder_flavours.py``).

A Qwen2.5-VL / Qwen3-VL bundle (its manifest's ``family``) gets ``graphs/qwen_check.py`` instead: per graph
(vision, embed, decoder, the fused pair) whether TensorRT's parser could take it, statically; exit 1 where a
graph is off its manifest or vision, embed or decoder is refused (the fused pair is ONNX Runtime's: reported only).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import onnx

from .attention_form import AttentionCore, attention_cores
from .contracts import ATTENTION_OUTPUTS, bundle_contracts
from .decoder_flavours import decoder_flavours
from .dynamic_dims import dynamic_dim_problems
from .manifest import Manifest
from .precision import fp16_problems
from .qwen_check import check_qwen_bundle, report_lines
from .qwen_manifest import QWEN_FAMILIES
from .shape_inputs import shape_input_problems
from .tensorrt_support import check_tensorrt
from .tensorrt_tables import DEFAULT_TARGET, TARGETS


def check_bundle(folder: Path, target: str = DEFAULT_TARGET) -> dict[str, list[str]]:
    """Returns {graph: problems}; an empty list everywhere means the bundle passes."""
    folder = Path(folder)
    data = json.loads((folder / "manifest.json").read_text())
    manifest = Manifest.from_dict(data)
    # A bundle exported before the decoder's attention outputs is checked against that older contract.
    attention = set(ATTENTION_OUTPUTS) <= set(data["outputs"].get("decoder", ()))
    contracts = bundle_contracts(manifest.decoder.num_layers, attention_outputs=attention)
    problems: dict[str, list[str]] = {}
    for name, contract in contracts.items():
        model = onnx.load(str(folder / manifest.graphs[name]), load_external_data=False)
        found = problems[name] = []
        inputs, outputs = [i.name for i in model.graph.input], [o.name for o in model.graph.output]
        if inputs != contract.input_names:
            found.append(f"inputs {inputs} differ from the contract {contract.input_names}")
        if outputs != contract.output_names:
            found.append(f"outputs {outputs} differ from the contract {contract.output_names}")
        found += check_tensorrt(model, name, target).problems
        found += shape_input_problems(model)
        found += dynamic_dim_problems(model, contract, manifest)
        found += fp16_problems(model)
    return problems


def attention_report(folder: Path) -> list[AttentionCore]:
    """Each decoder layer's attention core, fusable or not (information: both forms are valid bundles)."""
    manifest = Manifest.read(Path(folder))
    return attention_cores(onnx.load(str(Path(folder) / manifest.graphs["decoder"]), load_external_data=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m graphs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="check a bundle folder")
    check.add_argument("bundle", type=Path)
    check.add_argument("--target", choices=sorted(TARGETS), default=DEFAULT_TARGET,
                       help=f"TensorRT release to check against (default {DEFAULT_TARGET}: TensorRT "
                            f"{TARGETS[DEFAULT_TARGET].tensorrt}, the oldest parser of the three)")
    args = parser.parse_args(argv)
    spec = TARGETS[args.target]
    print(f"target {args.target}: TensorRT {spec.tensorrt} (onnx-tensorrt table {spec.table})")
    family = _family(args.bundle)
    if family in QWEN_FAMILIES:
        return _check_qwen(args.bundle, args.target, family)
    try:
        problems = check_bundle(args.bundle, args.target)
    except (OSError, ValueError) as e:       # no manifest, bad JSON, a field out of range (ManifestFieldError)
        print(f"error: {args.bundle} cannot be checked: {e}", file=sys.stderr)
        return 2
    for graph, found in problems.items():
        print(f"{graph:8s} {'ok' if not found else f'FAIL ({len(found)})'}")
        for p in found:
            print(f"    - {graph}: {p}")
    form = Manifest.read(args.bundle).attention_form
    cores = attention_report(args.bundle)
    fusable = sum(c.fusable for c in cores)
    print(f"attention ({form}): {fusable} of {len(cores)} decoder layers in a fusable form")
    for c in cores:
        layer = f"layer {c.layer}" if c.layer is not None else c.softmax
        print(f"    {layer:9s} {'fusable' if c.fusable else 'not fusable'}: {c.detail}")
    flavours = decoder_flavours(args.bundle, Manifest.read(args.bundle))
    print("decoder flavours (the TensorRT checks above are the standard one's):")
    for f in flavours:
        print(f"    {f.name:10s} {f.file}: {'ok' if not f.problems else f'FAIL ({len(f.problems)})'}, "
              f"runs on {', '.join(f.runs_on)}")
        for p in f.problems:
            print(f"        - {p}")
    return 1 if any(problems.values()) or any(f.problems for f in flavours) else 0


def _family(folder: Path) -> str | None:
    """The manifest's ``family`` (Qwen bundles have one; LLaVA manifests do not), None if unreadable."""
    try:
        data = json.loads((Path(folder) / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return data.get("family") if isinstance(data, dict) else None


def _check_qwen(folder: Path, target: str, family: str) -> int:
    try:
        verdicts = check_qwen_bundle(folder, target)
    except (OSError, ValueError) as e:       # a missing graph file, a field out of range (QwenManifestError)
        print(f"error: {folder} cannot be checked: {e}", file=sys.stderr)
        return 2
    print("\n".join(report_lines(verdicts, family)))
    return 1 if any(v.fails for v in verdicts) else 0


if __name__ == "__main__":
    sys.exit(main())
