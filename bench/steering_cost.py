"""python -m bench.steering_cost BUNDLE: what AdaptVis costs over plain decoding, for any bundle runtime.load opens.

    just bench-steering BUNDLE [--repeat 7] [--new-tokens 8] [--decoder auto] [--size 336x252] [--out FILE.json]

One image (``bench.ours.scene``, a non-square one by default), one question. Each repeat answers it
plainly, with AdaptVis taking its low branch and with AdaptVis taking its high branch (a threshold of
1.0 or 0.0 forces the branch), each cold (the image cache cleared first: vision and image prefix
recomputed, as for a new camera frame) and warm (a second question on the same frame). The methods
take turns in an order that alternates per repeat, so a slow spell of a shared machine falls on all of
them; ratios are the median of the per-repeat ratios. Every answer of one method must give the same
tokens (else the timing compares different work and the run stops). Prints a table, writes JSON.
Never imports torch.
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

import runtime

from . import machine, ours, quiet, report
from .stats import paired_ratio, summary

RESULTS = Path(__file__).resolve().parent / "results"
QUESTION = "Where is the mug in relation to the plate?"
# the paper's alphas; the threshold forces the branch so both are timed
METHODS = {"plain": {"kind": "plain"},
           "adaptvis_low": {"kind": "adaptvis", "low": 0.5, "high": 1.5, "threshold": 1.0},
           "adaptvis_high": {"kind": "adaptvis", "low": 0.5, "high": 1.5, "threshold": 0.0}}


def parse(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.steering_cost", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", type=Path)
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--new-tokens", type=int, default=8, help="answer length asked for (default 8)")
    p.add_argument("--decoder", default="auto", help="auto|standard|fused|fused-fp32|fused-fp16 (runtime.load)")
    p.add_argument("--size", default="336x252", help="the image's WIDTHxHEIGHT in pixels (default 336x252)")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: all)")
    p.add_argument("--out", type=Path, default=None,
                   help="result file (default bench/results/steering-<bundle>-<date>.json)")
    args = p.parse_args(argv)
    try:
        args.width, args.height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        p.error(f"--size must be WIDTHxHEIGHT, got {args.size!r}")
    if args.repeat < 1 or args.new_tokens < 1 or args.width < 1 or args.height < 1:
        p.error("--repeat, --new-tokens and the image size must be positive")
    return args


def measure(vlm, image, repeat: int, tokens: int, log=lambda m: None) -> dict:
    """``{method: {"cold": [s...], "warm": [s...], "tokens": ids, "alpha": the alpha chosen}}``, the methods
    interleaved per repeat."""
    out = {m: {"cold": [], "warm": [], "tokens": None, "alpha": None} for m in METHODS}
    for method in METHODS.values():                          # warm-up: sessions allocate their buffers
        ours.answer(vlm, image, QUESTION, method, tokens, cold=True)
    order = list(METHODS)
    for r in range(repeat):
        for m in (order if r % 2 == 0 else order[::-1]):
            cold = ours.answer(vlm, image, QUESTION, METHODS[m], tokens, cold=True)
            warm = ours.answer(vlm, image, QUESTION, METHODS[m], tokens, cold=False)
            for run in (cold, warm):
                if out[m]["tokens"] is None:
                    out[m]["tokens"], out[m]["alpha"] = run["token_ids"], run["alpha"]
                elif run["token_ids"] != out[m]["tokens"]:
                    raise RuntimeError(f"{m}: the answers' tokens differ between runs "
                                       f"({out[m]['tokens']} vs {run['token_ids']}): the timings would compare "
                                       f"different work")
            out[m]["cold"].append(cold["total_s"])
            out[m]["warm"].append(warm["total_s"])
        log(f"repeat {r + 1}/{repeat} done")
    return out


def main(argv=None) -> int:
    args = parse(argv)
    console = Console() if sys.stdout.isatty() else Console(width=150)
    info = machine.describe()
    vlm = runtime.load(args.bundle, decoder=args.decoder, threads=args.threads)
    image = ours.scene(0, args.height, args.width)
    flavour = vlm.sessions.decoder_choice.flavour                  # standard | fused
    console.print(f"[bold]steering cost[/] {args.bundle} ({flavour} decoder), "
                  f"image {args.width}x{args.height}, {args.new_tokens} new tokens, {args.repeat} repeats, "
                  f"on {info['cpu_model']} ({info['logical_cpus']} CPUs)")
    with quiet.CpuWatch() as watch:
        samples = measure(vlm, image, args.repeat, args.new_tokens, log=lambda m: console.print(f"  {m}"))
    result = {"bundle": str(args.bundle), "decoder": flavour,
              "image": [args.width, args.height], "new_tokens": args.new_tokens, "repeat": args.repeat,
              "machine": info, "foreign_cpu_s": watch.foreign_s, "wall_s": watch.wall_s,
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "measured": {m: {"cold": summary(s["cold"]), "warm": summary(s["warm"]), "tokens": s["tokens"],
                               "alpha": s["alpha"]}
                           for m, s in samples.items()},
              "ratios": {f"{m}_over_plain": {when: paired_ratio(samples[m][when], samples["plain"][when])
                                             for when in ("cold", "warm")}
                         for m in METHODS if m != "plain"}}
    table = Table(title="whole answer, median seconds (min-max); ratio: median of per-repeat ratios to plain")
    for col in ("method", "tokens", "cold", "warm", "cold / plain", "warm / plain"):
        table.add_column(col)
    for m, s in result["measured"].items():
        r = result["ratios"].get(f"{m}_over_plain", {})
        table.add_row(m, str(len(s["tokens"])), _fmt(s["cold"]), _fmt(s["warm"]),
                      _ratio(r.get("cold")), _ratio(r.get("warm")))
    console.print(table)
    if watch.foreign_s:
        console.print(f"other processes used {watch.foreign_s:.1f} CPU s of the {watch.wall_s:.1f} s measured")
    out = args.out or RESULTS / f"steering-{args.bundle.name}-{dt.date.today().isoformat()}.json"
    report.write_json(result, out)
    console.print(f"wrote {out}")
    return 0


def _fmt(s: dict) -> str:
    return f"{s['median']:.4f} ({s['min']:.4f}-{s['max']:.4f})"


def _ratio(s: dict | None) -> str:
    return "-" if not s or s["median"] is None else f"{s['median']:.3f} ({s['min']:.3f}-{s['max']:.3f})"


if __name__ == "__main__":
    raise SystemExit(main())
