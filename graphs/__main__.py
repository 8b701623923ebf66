"""python -m graphs check BUNDLE: contracts, TensorRT compatibility and fp16 safety of a bundle's graphs."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import onnx

from .contracts import ATTENTION_OUTPUTS, bundle_contracts
from .precision import fp16_unsafe_nodes
from .tensorrt_support import check_tensorrt


def check_bundle(folder: Path) -> dict[str, list[str]]:
    """Returns {graph: problems}; an empty list everywhere means the bundle passes."""
    manifest = json.loads((folder / "manifest.json").read_text())
    # A bundle exported before the decoder's attention outputs is checked against that older contract.
    attention = set(ATTENTION_OUTPUTS) <= set(manifest["outputs"].get("decoder", ()))
    contracts = bundle_contracts(manifest["decoder"]["num_layers"], attention_outputs=attention)
    problems: dict[str, list[str]] = {}
    for name, contract in contracts.items():
        model = onnx.load(str(folder / manifest["graphs"][name]), load_external_data=False)
        found = problems[name] = []
        inputs, outputs = [i.name for i in model.graph.input], [o.name for o in model.graph.output]
        if inputs != contract.input_names:
            found.append(f"inputs {inputs} differ from the contract {contract.input_names}")
        if outputs != contract.output_names:
            found.append(f"outputs {outputs} differ from the contract {contract.output_names}")
        found += check_tensorrt(model, name).problems
        if manifest["dtype"] == "fp16":
            found += [f"fp16 {node}: must run in fp32" for node in fp16_unsafe_nodes(model)]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m graphs", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="check a bundle folder").add_argument("bundle", type=Path)
    args = parser.parse_args(argv)
    problems = check_bundle(args.bundle)
    for graph, found in problems.items():
        print(f"{graph:8s} {'ok' if not found else 'FAIL'}")
        for p in found:
            print(f"    - {p}")
    return 1 if any(problems.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
