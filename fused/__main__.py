"""python -m fused BUNDLE [--dtype fp32|fp16] [--checkpoint DIR] [--atol X] [--provider cpu|cuda]"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .bundle import DTYPES, fuse_bundle
from .errors import FuseError

_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fused", description="Add a fused decoder (ONNX Runtime contrib "
                                     "ops, CPU and CUDA providers) to an exported bundle, checked against its "
                                     "standard decoder.")
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32",
                        help="fp32, or fp16 (fp16 weights and activations: for a GPU; slow on an x86 CPU)")
    parser.add_argument("--checkpoint", type=Path, help="the checkpoint the bundle was exported from "
                                                        "(default: the manifest's source_model)")
    parser.add_argument("--atol", type=float, help="widen the logits tolerance against decoder.onnx to at least this "
                                                   "(default: twice the export's own limit, from the model's rounding)")
    parser.add_argument("--provider", choices=sorted(_PROVIDERS), default="cpu", help="where the parity check runs")
    args = parser.parse_args(argv)
    try:
        record = fuse_bundle(args.bundle, args.dtype, args.checkpoint, args.atol, [_PROVIDERS[args.provider]],
                             log=lambda m: print(f"[fused] {m}", file=sys.stderr, flush=True))
    except FuseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    per_layer = record["nodes_per_layer"]
    print(f"{args.bundle}: {record['plain']} ({per_layer['plain']:.0f} nodes a layer) and {record['steered']} "
          f"({per_layer['steered']:.0f}), {record['attention_op']}; parity "
          + ", ".join(f"{k} {v:.1e}" for k, v in record["parity"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
