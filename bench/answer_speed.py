"""python -m bench.answer_speed BUNDLE [BUNDLE ...]: whole answers on drawn scenes, the bundles side by side.

    python -m bench.answer_speed bundles/spatial bundles/spatial-int8 [--items 24] [--rounds 3] [--out FILE.json]

Every bundle answers the same synthetic scenes (``scenes.synthetic``, ``--seed``), each in the
benchmark's own question form, with AdaptVis (the bundle's default steering), cold (image cache
cleared first, as a new camera frame would be). The bundles take turns item by item, so a slow
spell of a shared machine falls on all of them. Per bundle: the answer time (median, min-max over
every answer), strict accuracy, and, against the first bundle, how often the text and the alpha
AdaptVis chose are the same. Never imports torch.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Sequence

import runtime
from evaluation.scoring import score_item
from readers.datasets import load_dataset
from scenes.synthetic import generate

from . import machine, quiet


def measure(bundles: Sequence[Path], items: list, rounds: int) -> list[dict]:
    """Answer every item ``rounds`` times with every bundle, interleaved; one record per bundle."""
    vlms = [runtime.load(b) for b in bundles]
    for vlm in vlms:                                    # warm-up: the first call allocates the sessions' buffers
        vlm.answer(items[0].image_path, items[0].question)
    times = [[] for _ in bundles]
    answers = [[None] * len(items) for _ in bundles]
    for r in range(rounds):
        for i, item in enumerate(items):
            order = range(len(vlms)) if (r + i) % 2 == 0 else reversed(range(len(vlms)))
            for k in order:
                vlms[k].clear_cache()
                t = time.perf_counter()
                ans = vlms[k].answer(item.image_path, item.question)
                times[k].append(time.perf_counter() - t)
                answers[k][i] = (ans.text, ans.scale)
    first = answers[0]
    out = []
    for b, ts, got in zip(bundles, times, answers):
        correct = [score_item(item, text, "strict") for item, (text, _) in zip(items, got)]
        out.append({"bundle": str(b), "answer_ms_median": 1e3 * statistics.median(ts),
                    "answer_ms_min": 1e3 * min(ts), "answer_ms_max": 1e3 * max(ts), "answers": len(ts),
                    "accuracy": sum(correct) / len(items),
                    "same_text_as_first": sum(g[0] == f[0] for g, f in zip(got, first)) / len(items),
                    "same_alpha_as_first": sum(g[1] == f[1] for g, f in zip(got, first)) / len(items)})
    return out


def table(rows: list[dict]) -> str:
    lines = ["| bundle | answer ms, median (min-max) | accuracy | same text / alpha as the first |",
             "|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['bundle']} | {r['answer_ms_median']:.0f} ({r['answer_ms_min']:.0f}-{r['answer_ms_max']:.0f}) "
                     f"| {100 * r['accuracy']:.1f} % | {100 * r['same_text_as_first']:.0f} % / "
                     f"{100 * r['same_alpha_as_first']:.0f} % |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.answer_speed", description=__doc__.split("\n\n")[0])
    p.add_argument("bundles", nargs="+", type=Path, help="bundle folders; ratios and agreement are against the first")
    p.add_argument("--items", type=int, default=24, help="synthetic scenes (rounded to a multiple of 4; default 24)")
    p.add_argument("--seed", type=int, default=0, help="synthetic benchmark seed (default 0: never trained on)")
    p.add_argument("--rounds", type=int, default=3, help="answers per item and bundle (default 3)")
    p.add_argument("--workdir", type=Path, default=Path("build/answer-speed"), help="where the scenes are drawn")
    p.add_argument("--out", type=Path, help="also write the result as JSON")
    args = p.parse_args(argv)
    if args.items < 1 or args.rounds < 1:
        p.error("--items and --rounds must be positive")
    items = load_dataset(generate(args.workdir, n=args.items, seed=args.seed)).items
    started = dt.datetime.now(dt.timezone.utc)
    with quiet.CpuWatch() as watch:
        rows = measure(args.bundles, items, args.rounds)
    foreign = None if watch.foreign_s is None else watch.foreign_s / (watch.wall_s * (os.cpu_count() or 1))
    print(table(rows))
    if foreign is not None:
        print(f"other processes used {100 * foreign:.0f} % of the CPUs meanwhile")
    if args.out:
        result = {"started": started.isoformat(timespec="seconds"), "machine": machine.describe(),
                  "items": len(items), "seed": args.seed, "rounds": args.rounds,
                  "foreign_cpu_fraction": foreign, "bundles": rows}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
