"""Draw the procedural spatial benchmark, or one reading kind: ``just synthetic OUT --n 200``.

    python -m scenes OUT [--n 200] [--seed 0] [--size 336] [--objects mixed|shapes|things] [--reading KIND]

The benchmark: :mod:`scenes.synthetic` (``controlled_synthetic.json``); a reading kind:
:mod:`scenes.reading_scenes` (``reading.json``).  Prints the JSON file's path.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from .reading_scenes import READING_KINDS, generate_reading
from .synthetic import OBJECT_KINDS, generate


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m scenes", description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="output folder")
    ap.add_argument("--n", type=int, default=200, help="number of items, rounded to a multiple of 4 (default 200)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=336, help="image side in pixels (default 336)")
    ap.add_argument("--objects", choices=OBJECT_KINDS, default="mixed",
                    help="coloured shapes, everyday objects with a language prior, or half of each (default)")
    ap.add_argument("--reading", choices=READING_KINDS, default=None,
                    help="write a reading kind instead (reading.json: question, answer, objects, boxes)")
    args = ap.parse_args(argv)
    try:
        if args.reading:
            path = generate_reading(args.out, args.reading, args.n, args.seed, args.size)
        else:
            path = generate(args.out, args.n, args.seed, args.size, args.objects)
    except ValueError as e:
        ap.error(str(e))
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
