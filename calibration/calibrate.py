"""Calibrate AdaptVis for a bundle on a benchmark: grid search on a dev split, accuracy on the rest.

    python -m calibration.calibrate BUNDLE DATASET [--grid-low 0.5,0.8] [--grid-high 1.2,1.5,2.0]
        [--thresholds T,...] [--dev-fraction 0.2] [--seed 0] [--max-new-tokens 16] [--limit N]
        [--out DIR] [--cache FILE] [--no-write] [--scoring reference] [--round-confidence]

Procedure:

1. Split the items (seeded, ``--dev-fraction`` of them into dev; a Controlled set's
   (obj, ref) groups are kept whole: :func:`calibration.grid.dev_test_split`).
2. Dev: per item, the unsteered pass once (confidence + baseline answer) and one
   rescaled pass per candidate alpha (``ScalingVis(alpha)``: AdaptVis's second pass for
   that alpha).  The (alpha_low, alpha_high, threshold) sweep is then pure bookkeeping
   (:func:`calibration.grid.grid_search`; thresholds default to 0.05..0.95 plus every
   dev confidence).
3. Test: per item, the unsteered pass and the passes for the chosen alpha_low,
   alpha_high and the best constant (ScalingVis) alpha on dev -- nothing else is needed to
   score the dev-chosen settings on test.

Every model result is cached (``DIR/cache.jsonl``), so a rerun resumes where the last one
stopped and ``evaluation.evaluate`` reuses what it can.  Writes ``calibration.json``
into the bundle folder (atomically; ``runtime.load`` then uses it as the default
steering) and, in ``DIR`` (default ``runs/<bundle name>/<subset>``): a copy of it,
``calibration.md`` and ``calibration_heatmap.png`` (skipped, with one line saying which
extra to install, without matplotlib).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Sequence, TextIO

from evaluation.cache import ResultCache
from evaluation.paper_settings import PAPER_ALIASES
from evaluation.plots import MISSING_MATPLOTLIB, have_matplotlib
from evaluation.runner import NONE, Runner, alpha_name, baseline, bundle_digest, scaling
from evaluation.runs import CACHE_FILE, open_one_dataset
from evaluation.scoring import score_item, summarize
from readers.items import Item
from readers.workset import WorkSet
from runtime.bundle_write import write_calibration, write_file
from runtime.calibration_file import CALIBRATION_FILE, encode_calibration
from runtime.errors import SteeringError
from runtime.steering import check_alpha

from .grid import (ALPHA_HIGH_GRID, ALPHA_LOW_GRID, Cell, GridResult, choose_alpha, constant_alpha_accuracy,
                   dev_test_split, evaluate_cell, grid_search)
from .heatmap import calibration_heatmap
from .report import calibration_markdown

SCHEMA_VERSION = 1
REPORT_FILE = "calibration.md"
HEATMAP_FILE = "calibration_heatmap.png"


class CalibrationError(ValueError):
    """Nothing sensible to calibrate on (too few items for a dev and a test split ...)."""


@dataclass(frozen=True)
class Settings:
    alpha_lows: tuple[float, ...] = ALPHA_LOW_GRID
    alpha_highs: tuple[float, ...] = ALPHA_HIGH_GRID
    thresholds: Optional[tuple[float, ...]] = None     # None: 0.05..0.95 + every dev confidence
    dev_fraction: float = 0.2
    seed: int = 0
    scoring: str = "reference"
    round_confidence: bool = False


@dataclass
class Outcome:
    """What a calibration found; ``document`` is the calibration.json content."""

    grid: GridResult
    test_cell: Cell
    dev_ids: list[str]
    test_ids: list[str]
    scaling_alpha: float                 # best constant alpha on dev
    document: dict
    stats: dict = field(default_factory=dict)

    @property
    def best(self) -> Cell:
        return self.grid.best


def calibrate_items(runner: Runner, ws: WorkSet, settings: Settings = Settings()) -> Outcome:
    """Run the passes the calibration needs (through ``runner``'s cache) and search the grid."""
    s = settings
    items = {it.id: it for it in ws.items}
    groups = ws.groups
    dev, test = dev_test_split(list(items), s.dev_fraction, s.seed, groups)
    if not dev or not test:
        raise CalibrationError(f"{len(items)} usable items split into dev={len(dev)} and test={len(test)}: "
                               f"both must be non-empty (more items, or another --dev-fraction)")
    lows, highs = [float(a) for a in s.alpha_lows], [float(a) for a in s.alpha_highs]
    alphas = list(dict.fromkeys(lows + highs))
    rnd = 2 if s.round_confidence else None

    def score(i: str, rec: dict) -> bool:
        return score_item(items[i], rec["text"], s.scoring)

    # -- dev: every candidate alpha ------------------------------------------------------------
    passes = [baseline()] + [scaling(a) for a in alphas]
    res = runner.run([(items[i], p) for i in dev for p in passes], "calibrate: dev")
    dev = [i for i in dev if i not in runner.failures]
    if not dev:
        raise CalibrationError("every dev item failed")
    conf = {i: float(res[(i, NONE)]["confidence"]) for i in dev}
    table = {i: {a: score(i, res[(i, alpha_name(a))]) for a in alphas} for i in dev}
    base = {i: score(i, res[(i, NONE)]) for i in dev}
    g = grid_search(conf, table, lows, highs, s.thresholds, ids=dev,
                    subset=PAPER_ALIASES.get(ws.subset, ws.subset), round_confidence=rnd)
    b = g.best
    const = constant_alpha_accuracy(table, alphas, ids=dev)
    scaling_alpha = min(const, key=lambda a: (-round(const[a], 9), abs(a - 1.0), a))

    # -- test: only what the chosen settings need ---------------------------------------------
    test_alphas = list(dict.fromkeys([b.alpha_low, b.alpha_high, scaling_alpha]))
    passes = [baseline()] + [scaling(a) for a in test_alphas]
    res = runner.run([(items[i], p) for i in test for p in passes], "calibrate: test")
    test = [i for i in test if i not in runner.failures]
    if not test:
        raise CalibrationError("every test item failed")
    for i in test:
        conf[i] = float(res[(i, NONE)]["confidence"])
        table[i] = {a: score(i, res[(i, alpha_name(a))]) for a in test_alphas}
        base[i] = score(i, res[(i, NONE)])
    test_cell = evaluate_cell(conf, table, b.alpha_low, b.alpha_high, b.threshold, ids=test, round_confidence=rnd)

    def confidence(i: str) -> float:          # as the rule compares it
        return round(conf[i], 2) if rnd else conf[i]

    def chosen(i: str) -> float:
        return choose_alpha(confidence(i), b.alpha_low, b.alpha_high, b.threshold)

    def metrics(ids: list[str]) -> dict:
        its = [items[i] for i in ids]
        return {
            "baseline": summarize(its, [base[i] for i in ids]),
            "scalingvis": {"alpha": scaling_alpha, **summarize(its, [table[i][scaling_alpha] for i in ids])},
            "adaptvis": {**summarize(its, [table[i][chosen(i)] for i in ids]),
                         "n_alpha_low": sum(confidence(i) < b.threshold for i in ids)},
        }

    dev_metrics, test_metrics = metrics(dev), metrics(test)
    dev_metrics["scalingvis_by_alpha"] = {json.dumps(a): v for a, v in const.items()}
    document = {
        "schema_version": SCHEMA_VERSION,
        "adaptvis": {"alpha_low": b.alpha_low, "alpha_high": b.alpha_high, "threshold": b.threshold,
                     "round_confidence": bool(s.round_confidence), "apply_to": "last_token"},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "tool": "python -m calibration.calibrate",
        "bundle_sha256": runner.bundle_sha256,
        "dataset": {"path": str(ws.source), "subset": ws.subset, "n_loaded": ws.n_loaded, "n_used": len(items),
                    "problems": len(ws.problems), "failed_items": len(runner.failures)},
        "split": {"dev_fraction": s.dev_fraction, "seed": s.seed, "n_dev": len(dev), "n_test": len(test),
                  "groups_kept_whole": groups is not None},
        "search": {"alpha_low": lows, "alpha_high": highs,
                   "thresholds": list(s.thresholds) if s.thresholds is not None else
                   "0.05..0.95 step 0.05 + every dev confidence",
                   "n_thresholds": len(g.thresholds), "n_cells": len(g.cells),
                   "tie_break_reference_threshold": g.reference_threshold,
                   "max_new_tokens": runner.max_new_tokens, "scoring": s.scoring},
        "accuracy": {"dev": {"adaptvis": b.accuracy, "baseline": dev_metrics["baseline"]["accuracy"],
                             "scalingvis": dev_metrics["scalingvis"]["accuracy"]},
                     "test": {"adaptvis": test_cell.accuracy, "baseline": test_metrics["baseline"]["accuracy"],
                              "scalingvis": test_metrics["scalingvis"]["accuracy"]}},
        "metrics": {"dev": dev_metrics, "test": test_metrics},
    }
    return Outcome(g, test_cell, dev, test, scaling_alpha, document)


# ------------------------------------------------------------------------------------- CLI

def _floats(text: str, what: str, lo: float | None = None, hi: float | None = None) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what}: expected comma-separated numbers, got {text!r}") from None
    if not vals:
        raise argparse.ArgumentTypeError(f"{what}: no values in {text!r}")
    for v in vals:
        if v != v or (lo is not None and v <= lo) or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"{what}: {v} is out of range")
    return vals


def _alphas(text: str, what: str) -> tuple[float, ...]:
    """Candidate alphas, each in the runtime's range (checked here, not hours into a run)."""
    vals = _floats(text, what)
    for v in vals:
        try:
            check_alpha(what, v)
        except SteeringError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return vals


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m calibration.calibrate", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path, help="bundle folder (calibration.json is written into it)")
    ap.add_argument("dataset", help="anything readers.datasets.load_dataset reads (file or folder)")
    ap.add_argument("--subset", help="which subset, when DATASET is a folder holding several")
    ap.add_argument("--image-root", type=Path, help="where the images are (default: next to the annotation file)")
    ap.add_argument("--grid-low", type=lambda t: _alphas(t, "--grid-low"), default=ALPHA_LOW_GRID,
                    help="alpha_low candidates (default 0.5,0.8)")
    ap.add_argument("--grid-high", type=lambda t: _alphas(t, "--grid-high"), default=ALPHA_HIGH_GRID,
                    help="alpha_high candidates (default 1.2,1.5,2.0)")
    ap.add_argument("--thresholds", type=lambda t: _floats(t, "--thresholds", -1e-12, 1.0),
                    help="confidence thresholds (default: 0.05..0.95 step 0.05 plus every dev confidence)")
    ap.add_argument("--dev-fraction", type=float, default=0.2, help="share of items in the dev split (default 0.2)")
    ap.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    ap.add_argument("--max-new-tokens", type=int, default=16, help="tokens generated per answer (default 16)")
    ap.add_argument("--limit", type=int, help="use at most N items (whole groups for the Controlled sets)")
    ap.add_argument("--scoring", choices=["reference", "reference-strict", "strict"], default="reference",
                    help="answer scoring rule (evaluation.scoring; default reference)")
    ap.add_argument("--round-confidence", action="store_true",
                    help="round confidences to 2 decimals before comparing, as the reference code does")
    ap.add_argument("--out", type=Path, help="output folder (default runs/<bundle name>/<subset>)")
    ap.add_argument("--cache", type=Path, help="result cache file (default OUT/cache.jsonl)")
    ap.add_argument("--no-write", action="store_true", help="do not write calibration.json into the bundle")
    ap.add_argument("--provider", action="append", help="cpu (default), cuda or tensorrt; repeatable")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    args = parser().parse_args(argv)
    if not 0.0 < args.dev_fraction < 1.0:
        parser().error(f"--dev-fraction must be in (0, 1), got {args.dev_fraction}")
    if args.max_new_tokens < 1:
        parser().error("--max-new-tokens must be positive")
    if args.limit is not None and args.limit < 1:
        parser().error("--limit must be positive")
    t0 = time.perf_counter()
    opened = open_one_dataset(args, err)
    if opened is None:
        return 2
    ws, vlm, out_dir = opened
    settings = Settings(alpha_lows=tuple(args.grid_low), alpha_highs=tuple(args.grid_high),
                        thresholds=None if args.thresholds is None else tuple(sorted(set(args.thresholds))),
                        dev_fraction=args.dev_fraction, seed=args.seed, scoring=args.scoring,
                        round_confidence=args.round_confidence)
    with ResultCache(args.cache or out_dir / CACHE_FILE) as cache:
        runner = Runner(vlm, cache, args.max_new_tokens, progress=not args.quiet, err=err,
                        bundle=bundle_digest(vlm))
        try:
            outcome = calibrate_items(runner, ws, settings)
        except CalibrationError as e:
            print(f"error: {e}", file=err)
            return 2
    outcome.stats = {**runner.stats(), "wall_seconds": round(time.perf_counter() - t0, 3),
                     "cache": str(cache.path)}
    doc = outcome.document
    written = None
    if not args.no_write:
        written = write_calibration(vlm.bundle, doc).path(CALIBRATION_FILE)      # checked, signed into the bundle
    write_file(out_dir / CALIBRATION_FILE, encode_calibration(doc))             # the run's own record

    heatmap = None
    if have_matplotlib():
        calibration_heatmap(outcome.grid, out_dir / HEATMAP_FILE, title=f"AdaptVis dev accuracy, {ws.subset}")
        heatmap = HEATMAP_FILE
    else:
        print(MISSING_MATPLOTLIB, file=err)
    (out_dir / REPORT_FILE).write_text(calibration_markdown(doc, outcome.grid, outcome.stats, heatmap,
                                                            ws.problems, runner.failures))
    a, acc = doc["adaptvis"], doc["accuracy"]
    print(f"AdaptVis for {ws.subset}: alpha_low={a['alpha_low']} alpha_high={a['alpha_high']} "
          f"threshold={a['threshold']:.4g}", file=out)
    print(f"  dev  ({doc['split']['n_dev']}): adaptvis {acc['dev']['adaptvis']:.1f}  baseline "
          f"{acc['dev']['baseline']:.1f}  scalingvis({outcome.scaling_alpha}) {acc['dev']['scalingvis']:.1f}", file=out)
    print(f"  test ({doc['split']['n_test']}): adaptvis {acc['test']['adaptvis']:.1f}  baseline "
          f"{acc['test']['baseline']:.1f}  scalingvis({outcome.scaling_alpha}) {acc['test']['scalingvis']:.1f}",
          file=out)
    s = outcome.stats
    print(f"  model calls {s['model_calls']}, cached {s['cache_hits']}, {s['wall_seconds']:.1f} s", file=out)
    print(f"  {'wrote ' + str(written) if written else 'bundle left unchanged (--no-write)'}; "
          f"report {out_dir / REPORT_FILE}", file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
