"""`python -m engines BUNDLE [--precision fp16|fp32] [--max-prompt N] [--max-context N] [--workspace GB]`
(`just engines ...`): build the bundle's TensorRT engines on this machine.

Exit 0 built; 2 a bad request (arguments, bundle, limits, precision: checked before TensorRT is
imported, so they need no GPU); 1 this machine cannot build (no TensorRT, no GPU, a parser or
builder failure), with one line saying why.
"""
from __future__ import annotations

import argparse
import sys

from runtime.engine_layout import EngineError
from runtime.engine_target import TargetUnavailable
from runtime.errors import BundleError

from .builder import PRECISIONS, build_bundle_engines, check_request


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="just engines", description="Build TensorRT engines for a bundle on this machine "
                                "(engines are tied to the TensorRT version and the GPU).")
    p.add_argument("bundle", help="bundle folder (from just export / just quantize)")
    p.add_argument("--precision", choices=PRECISIONS, help="default: the bundle's (fp16 bundles build strongly typed)")
    p.add_argument("--max-prompt", type=int, help="most prompt tokens, image tokens included (default: --max-context)")
    p.add_argument("--max-context", type=int, help="prompt + generated tokens (default: the model's context)")
    p.add_argument("--workspace", type=float, metavar="GB", help="TensorRT workspace pool limit (default: TensorRT's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        check_request(args.bundle, args.precision, args.max_prompt, args.max_context, args.workspace)
    except (BundleError, EngineError) as e:
        parser.error(str(e))                    # exit 2
    try:
        build_bundle_engines(args.bundle, args.precision, args.max_prompt, args.max_context, args.workspace,
                             show_progress=not args.no_progress)
    except (EngineError, TargetUnavailable) as e:
        print(f"engines: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("engines: interrupted; the previous engines (if any) are unchanged", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
