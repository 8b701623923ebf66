"""python -m diagnostics explain BUNDLE IMAGE "question" [...] | probe BUNDLE DATASET [...]"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence, TextIO

from . import explain, probe

COMMANDS = {"explain": (explain, "one PNG: attention over the image at alpha = 1 and at AdaptVis's alpha"),
            "probe": (probe, "a linear probe on the image features vs the VLM's accuracy")}


def parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    ap = argparse.ArgumentParser(prog="python -m diagnostics",
                                 description="Where the model looked, and what its eyes knew.")
    sub = ap.add_subparsers(dest="command", required=True)
    subs = {}
    for name, (module, help_text) in COMMANDS.items():
        subs[name] = sub.add_parser(name, help=help_text, description=module.__doc__.split("\n\n")[0],
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(subs[name])
    return ap, subs


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    ap, subs = parser()
    args = ap.parse_args(argv)
    return COMMANDS[args.command][0].run(args, subs[args.command], out, err)


if __name__ == "__main__":
    sys.exit(main())
