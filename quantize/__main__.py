"""python -m quantize BUNDLE --to fp16|int8|int4|int8-dynamic: write a quantized copy of an exported bundle (a Qwen2.5-VL /
Qwen3-VL bundle: int8|int4|int8-dynamic; quantize/qwen_bundle.py)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence, TextIO

from runtime.errors import BundleError

from .bundle import default_out, quantize_bundle
from .errors import QuantizeError
from .settings import Settings
from .weights import ACCURACY_LEVELS, BLOCK_SIZES, PRECISIONS


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m quantize", description=__doc__)
    p.add_argument("bundle", type=Path, help="the source bundle folder (an fp32 export; only read)")
    p.add_argument("--to", required=True, choices=PRECISIONS, help="fp16; int8 / int4 weight-only MatMulNBits; int8-dynamic: int8 weights and "
                        "activations (MatMulInteger: integer arithmetic, the fast one for prefill on a CPU)")
    p.add_argument("--block-size", type=int, choices=BLOCK_SIZES,
                   help="int8/int4: weights per scale along the input dimension (default 32)")
    p.add_argument("--symmetric", action="store_true",
                   help="int8/int4/int8-dynamic: symmetric (no zero points); default asymmetric")
    p.add_argument("--accuracy-level", type=int, choices=ACCURACY_LEVELS,
                   help="int8/int4: MatMulNBits compute type, 0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8 (int8 default 4: "
                        "activations rounded to int8 per block of 32, logits a little further from the source's; "
                        "levels 0-2 answered 3-5x slower than the fp32 bundle on a CPU, 4 as fast, with the same answers "
                        "and alphas on the spatial model; int4 default 0; docs/quantize-speed.md)")
    p.add_argument("--vision", action="store_true", help="also the vision graph (tower and projector)")
    p.add_argument("--embed", action="store_true", help="also the embedding table (fp16 only)")
    p.add_argument("--lm-head", action="store_true", help="also the decoder's LM head (kept as exported by default)")
    p.add_argument("--out", type=Path, help="output bundle folder (default: BUNDLE-<to> beside the source)")
    p.add_argument("--force", action="store_true", help="replace a bundle already at --out")
    p.add_argument("--report", action="store_true",
                   help="measure the accuracy cost against the source; written to the manifest and quantization.md")
    p.add_argument("--report-items", type=int, default=40, help="synthetic benchmark items for --report (default 40)")
    p.add_argument("--report-seed", type=int, default=0, help="synthetic benchmark seed for --report (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    args = parser().parse_args(argv)
    log = (lambda m: None) if args.quiet else (lambda m: print(f"[quantize] {m}", file=err, flush=True))
    try:
        settings = Settings.build(to=args.to, block_size=args.block_size, symmetric=args.symmetric,
                                  accuracy_level=args.accuracy_level, vision=args.vision, embed=args.embed,
                                  lm_head=args.lm_head, report=args.report, report_items=args.report_items,
                                  report_seed=args.report_seed)
        manifest = quantize_bundle(args.bundle, args.out, settings, force=args.force, log=log)
    except (QuantizeError, BundleError) as e:
        print(f"python -m quantize: error: {e}", file=err)
        return 2
    target = (args.out or default_out(args.bundle.expanduser().resolve(), args.to)).expanduser().resolve()
    print(target, file=out)
    accuracy = manifest.quantization.get("accuracy")
    if accuracy:
        f, b = accuracy["fixed_prompts"], accuracy["benchmark"]
        print(f"max |dlogits| {f['max_abs_dlogits']:.3g}, max KL {f['max_kl']:.3g}, "
              f"greedy agreement {100 * b['none']['all_tokens_agreement']:.0f}% (unsteered) / "
              f"{100 * b['adaptvis']['all_tokens_agreement']:.0f}% (AdaptVis), "
              f"alpha changed on {b['alpha_changed']} of {b['n_items']}: see {target / 'quantization.md'}", file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

