"""Evaluate a bundle: baseline, ScalingVis and AdaptVis side by side, and the image's influence.

    python -m evaluation.evaluate BUNDLE DATASET [DATASET ...] [--out DIR] [--limit N]
        [--max-new-tokens 16] [--scalingvis-alpha A] [--adaptvis LOW,HIGH,THRESHOLD]
        [--scoring reference] [--no-influence] [--cache FILE]

Per item, four model calls (each cached in ``DIR/cache.jsonl``, shared with
``calibration.calibrate`` when both use the same folder):

* baseline: ``steering=None`` with ``measure_image_influence=True`` -- the unsteered
  answer, its confidence, and the total-variation distance between the first-token
  distributions with the image and with the item's blank image (see ``blank``);
* ScalingVis: ``steering=ScalingVis(A)``;
* AdaptVis: ``steering=AdaptVis(low, high, threshold)``, the runtime's own two-pass path;
* blank: the unsteered answer about the item's ``blank_image_path`` (else a mean-colour
  image of the same size): the "blind" answer.

Settings, per subset: ``--adaptvis`` if given, else the bundle's ``calibration.json``
(``vlm.default_steering``), else the paper's LLaVA-1.5 setting for the subset
(:data:`evaluation.paper_settings.PAPER_SETTINGS`; the synthetic set takes Controlled_Images_A's).
ScalingVis: ``--scalingvis-alpha``, else the constant alpha the calibration found best on
dev (recorded in calibration.json), else the paper's.

Metrics come from :func:`evaluation.scoring.summarize`: accuracy, plus pair and set
accuracy for the Controlled sets and F1 for VSR.  Where the items have a ``kind`` or ``familiar``
(the synthetic set), accuracy is also broken down by object kind (shapes / things) and
by whether the relation is the one a language prior expects (familiar / unfamiliar),
for each method and for the blind answer.  Writes ``evaluation.md``,
``evaluation.json`` and ``answers_<subset>.png`` (the answers' option words with and
without the image, for correctly and incorrectly answered items) into ``DIR`` (default
``runs/<bundle name>/<subset>``).  Without matplotlib the PNGs are skipped with one line
saying which extra to install; everything else is written.

Where items have ``boxes`` (the synthetic set; WhatsUp files that carry them), the AdaptVis
pass also asks for the attention maps and the cache keeps, per item, the share of image
attention inside each box (A, B and their union), per layer, for its alpha = 1 pass and
its rescaled pass (:mod:`evaluation.alignment`).  The report (``alignment`` in
evaluation.json) gives the mean share inside the boxes over the middle layers (and per
layer in the JSON) at alpha = 1 and at the alpha AdaptVis chose, for all items, split by
whether the AdaptVis / the baseline answer was right, and by the alpha applied (low /
high), beside the boxes' area fraction: the share attention spread evenly would give.
A cached AdaptVis record from before (no alignment in it) is recomputed once when the
bundle can report attention; a bundle exported without attention outputs gives ``n/a``.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Sequence, TextIO

import runtime
from readers.errors import DatasetError
from readers.items import Item
from readers.workset import WorkSet, load_worksets
from runtime.calibration_file import Calibration
from runtime.errors import BundleError, RuntimeInputError, SteeringError
from runtime.steering import PAPER_DEFAULT, AdaptVis, check_alpha, describe

from .alignment import parse_boxes, summarize_alignment
from .cache import ResultCache
from .paper_settings import PAPER_SETTINGS, paper_setting
from .plots import MISSING_MATPLOTLIB, answer_histograms, have_matplotlib
from .report import evaluation_markdown
from .runner import BLANK, NONE, Runner, adaptvis, baseline, blank, bundle_digest, scaling
from .runs import CACHE_FILE, default_out
from .scoring import score_item, summarize

REPORT_FILE = "evaluation.md"
JSON_FILE = "evaluation.json"
OTHER = "other"


def answer_category(text: str, options: Sequence[str]) -> str:
    """The option word that occurs first in ``text`` (whole word, case-insensitive), else ``"other"``."""
    best, pos = OTHER, None
    for o in options:
        m = re.search(r"(?<![A-Za-z0-9])" + re.escape(o) + r"(?![A-Za-z0-9])", text, re.IGNORECASE)
        if m and (pos is None or m.start() < pos):
            best, pos = o, m.start()
    return best


def resolve_settings(calibration: Calibration | None, default_steering: AdaptVis, subset: str,
                     adaptvis_arg: Optional[tuple], scalingvis_arg: Optional[float]) -> tuple[float, str, AdaptVis, str]:
    """(ScalingVis alpha, where it came from, AdaptVis, where it came from) for one subset; ``calibration``:
    the loaded bundle's (``VLM.bundle.calibration``), read and checked when it was opened."""
    paper, paper_src = paper_setting(subset)
    if adaptvis_arg is not None:
        lo, hi, th = adaptvis_arg
        av, av_src = AdaptVis(low=lo, high=hi, threshold=th), "--adaptvis"
    elif calibration is not None:
        on = calibration.subset
        av, av_src = default_steering, "bundle calibration.json" + (f", calibrated on {on}" if on else "")
    elif paper is not None:
        av, av_src = AdaptVis(low=paper[0], high=paper[1], threshold=paper[2]), paper_src
    else:
        av, av_src = PAPER_DEFAULT, "paper default (Controlled_Images_A)"
    if scalingvis_arg is not None:
        return float(scalingvis_arg), "--scalingvis-alpha", av, av_src
    if calibration is not None and calibration.scalingvis_alpha is not None:
        return calibration.scalingvis_alpha, "best constant alpha on the calibration's dev split", av, av_src
    if paper is not None:
        return float(paper[3]), paper_src, av, av_src
    return float(PAPER_SETTINGS["Controlled_Images_A"][3]), "paper, Controlled_Images_A", av, av_src


def _pct_text(v: Optional[float]) -> str:
    return "n/a" if v is None else f"{v:.1f} %"


def _pct(k: int, n: int) -> Optional[float]:
    return 100.0 * k / n if n else None


#: The breakdown's splits: name -> which items belong to it.
SPLITS = (("kind=shape", lambda it: it.kind == "shape"), ("kind=thing", lambda it: it.kind == "thing"),
          ("familiar", lambda it: it.familiar is True), ("unfamiliar", lambda it: it.familiar is False))


def breakdown(items: Sequence[Item], correct: dict[str, list[bool]]) -> Optional[dict]:
    """Accuracy (%) per method (``correct``: method -> per-item scores, in ``items`` order)
    for each split of :data:`SPLITS` that has items: ``{split: {"n", method: accuracy}}``.
    ``None`` when no item has a ``kind`` or ``familiar`` (WhatsUp, old synthetic files)."""
    if not any(it.kind is not None or it.familiar is not None for it in items):
        return None
    out: dict = {}
    for name, member in SPLITS:
        idx = [i for i, it in enumerate(items) if member(it)]
        if idx:
            out[name] = {"n": len(idx), **{m: _pct(sum(c[i] for i in idx), len(idx)) for m, c in correct.items()}}
    return out


def evaluate_items(runner: Runner, ws: WorkSet, scalingvis_alpha: float, steering: AdaptVis,
                   scoring: str = "reference", influence: bool = True) -> dict:
    """Run the four passes on every item (through the cache); the subset's part of evaluation.json."""
    boxed = any(parse_boxes(it.boxes) for it in ws.items)
    p_base, p_sv, p_av = baseline(influence=influence), scaling(scalingvis_alpha), adaptvis(steering, alignment=boxed)
    passes = [p_base, p_sv, p_av] + ([blank()] if influence else [])
    res = runner.run([(it, p) for it in ws.items for p in passes], f"evaluate: {ws.subset}")
    items: list[Item] = [it for it in ws.items if it.id not in runner.failures]

    def correct(p) -> list[bool]:
        return [score_item(it, res[(it.id, p.name)]["text"], scoring) for it in items]

    base, sv, av = correct(p_base), correct(p_sv), correct(p_av)
    av_conf = [float(res[(it.id, p_av.name)]["confidence"]) for it in items]
    rounded = [round(c, 2) if steering.round_confidence else c for c in av_conf]
    out: dict = {
        "dataset": str(ws.source), "n": len(items), "n_loaded": ws.n_loaded, "problems": len(ws.problems),
        "methods": {
            "baseline": summarize(items, base),
            "scalingvis": {"alpha": scalingvis_alpha, **summarize(items, sv)},
            "adaptvis": {**summarize(items, av), "n_alpha_low": sum(c < steering.threshold for c in rounded),
                         "mean_confidence": sum(av_conf) / len(av_conf) if av_conf else 0.0},
        },
    }
    scores = {"baseline": base, "scalingvis": sv, "adaptvis": av}
    if influence:
        scores["blind"] = correct(blank())
    by_split = breakdown(items, scores)
    if by_split is not None:
        out["breakdown"] = by_split
    if boxed:
        low = [c < steering.threshold for c in rounded]
        out["alignment"] = alignment_report(items, [res[(it.id, p_av.name)] for it in items], av, base, low,
                                            runner.attention_available)
    if not influence:
        return out
    cats = [*dict.fromkeys(o for it in items for o in it.options), OTHER]
    counts = {s: {"with image": Counter(), "blank image": Counter()} for s in ("correct", "incorrect")}
    rows = {"all": [], "correct": [], "incorrect": []}
    for it, ok in zip(items, base):
        rec = res[(it.id, NONE)]
        with_image = answer_category(rec["text"], it.options)
        without = answer_category(res[(it.id, BLANK)]["text"], it.options)
        split = "correct" if ok else "incorrect"
        counts[split]["with image"][with_image] += 1
        counts[split]["blank image"][without] += 1
        row = (rec["influence"]["tv_distance"], rec["influence"]["answer_changed"], with_image != without)
        rows["all"].append(row)
        rows[split].append(row)
    out["influence"] = {
        s: {"n": len(r),
            "mean_tv_distance": sum(x[0] for x in r) / len(r) if r else None,
            "first_token_changed": _pct(sum(x[1] for x in r), len(r)),
            "answer_option_changed": _pct(sum(x[2] for x in r), len(r))}
        for s, r in rows.items()}
    out["histograms"] = {"categories": cats,
                         "counts": {s: {c: dict(v) for c, v in d.items()} for s, d in counts.items()}}
    return out


#: evaluation.json's alignment groups, in report order.
ALIGNMENT_GROUPS = ("all", "adaptvis_correct", "adaptvis_incorrect", "baseline_correct", "baseline_incorrect",
                    "alpha_low", "alpha_high")


def alignment_report(items: Sequence[Item], av_records: Sequence[dict], av_correct: Sequence[bool],
                     base_correct: Sequence[bool], alpha_low: Sequence[bool], attention_available: bool) -> dict:
    """evaluation.json's ``alignment``: the AdaptVis records' shares inside the boxes, by group
    (:data:`ALIGNMENT_GROUPS`; :func:`evaluation.alignment.summarize_alignment`)."""
    n_boxed = sum(bool(parse_boxes(it.boxes)) for it in items)
    idx = [i for i, r in enumerate(av_records) if r.get("alignment")]
    recs = [av_records[i]["alignment"] for i in idx]
    out: dict = {"n_with_boxes": n_boxed, "n": len(recs)}
    if not recs:
        out["note"] = ("n/a: the bundle's decoder has no attention outputs (exported before them); re-export it"
                       if not attention_available else "n/a: no item's boxes gave an alignment")
        return out
    member = {"all": lambda i: True, "adaptvis_correct": lambda i: av_correct[i],
              "adaptvis_incorrect": lambda i: not av_correct[i], "baseline_correct": lambda i: base_correct[i],
              "baseline_incorrect": lambda i: not base_correct[i], "alpha_low": lambda i: alpha_low[i],
              "alpha_high": lambda i: not alpha_low[i]}
    groups = {g: [k for k, i in enumerate(idx) if member[g](i)] for g in ALIGNMENT_GROUPS}
    out.update(summarize_alignment(recs, groups))
    return out


def _adaptvis_arg(text: str) -> tuple[float, float, float]:
    try:
        lo, hi, th = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--adaptvis wants LOW,HIGH,THRESHOLD, got {text!r}") from None
    try:
        AdaptVis(low=lo, high=hi, threshold=th)
    except SteeringError as e:
        raise argparse.ArgumentTypeError(f"--adaptvis {text!r}: {e}") from None
    return lo, hi, th


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m evaluation.evaluate", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path, help="bundle folder")
    ap.add_argument("datasets", nargs="+", metavar="DATASET",
                    help="what readers.datasets.load_dataset reads; a folder with several subsets gives each")
    ap.add_argument("--subset", help="only this subset of a folder holding several")
    ap.add_argument("--image-root", type=Path, help="where the images are (default: next to the annotation file)")
    ap.add_argument("--out", type=Path, help="output folder (default runs/<bundle name>/<subset>)")
    ap.add_argument("--cache", type=Path, help="result cache file (default OUT/cache.jsonl)")
    ap.add_argument("--limit", type=int, help="at most N items per subset (whole groups for the Controlled sets)")
    ap.add_argument("--max-new-tokens", type=int, default=16, help="tokens generated per answer (default 16)")
    ap.add_argument("--scalingvis-alpha", type=float, help="ScalingVis alpha (default: see above)")
    ap.add_argument("--adaptvis", type=_adaptvis_arg, metavar="LOW,HIGH,THRESHOLD",
                    help="AdaptVis settings (default: the bundle's calibration.json, else the paper's)")
    ap.add_argument("--scoring", choices=["reference", "reference-strict", "strict"], default="reference")
    ap.add_argument("--no-influence", action="store_true", help="skip the blind test (two fewer passes per item)")
    ap.add_argument("--provider", action="append", help="cpu (default), cuda or tensorrt; repeatable")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    args = parser().parse_args(argv)
    if args.max_new_tokens < 1:
        parser().error("--max-new-tokens must be positive")
    if args.limit is not None and args.limit < 1:
        parser().error("--limit must be positive")
    if args.scalingvis_alpha is not None:
        try:
            check_alpha("--scalingvis-alpha", args.scalingvis_alpha)
        except SteeringError as e:
            parser().error(str(e))
    t0 = time.perf_counter()
    try:
        worksets = load_worksets(args.datasets, args.subset, args.image_root, args.limit, err)
    except DatasetError as e:
        print(f"error: {e}", file=err)
        return 2
    worksets = [w for w in worksets if w.items or print(f"{w.subset}: no usable items, skipped", file=err)]
    if not worksets:
        print("error: no usable items", file=err)
        return 2
    try:
        vlm = runtime.load(args.bundle, providers=args.provider or ["cpu"])
    except RuntimeInputError as e:
        print(f"error: {type(e).__name__}: {e}", file=err)
        return 2
    names = list(dict.fromkeys(w.subset for w in worksets))
    out_dir = args.out or (default_out(args.bundle, names[0]) if len(names) == 1
                           else default_out(args.bundle, "evaluation"))
    out_dir.mkdir(parents=True, exist_ok=True)
    doc: dict = {"bundle": str(args.bundle), "bundle_sha256": bundle_digest(vlm),
                 "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 "tool": "python -m evaluation.evaluate", "max_new_tokens": args.max_new_tokens,
                 "scoring": args.scoring, "subsets": {}}
    plots = have_matplotlib()
    if not plots:
        print(MISSING_MATPLOTLIB, file=err)

    problems = []
    with ResultCache(args.cache or out_dir / CACHE_FILE) as cache:
        runner = Runner(vlm, cache, args.max_new_tokens, progress=not args.quiet, err=err,
                        bundle=doc["bundle_sha256"])
        for ws in worksets:
            problems += ws.problems
            try:
                sv, sv_src, av, av_src = resolve_settings(vlm.bundle.calibration, vlm.default_steering, ws.subset,
                                                          args.adaptvis, args.scalingvis_alpha)
            except BundleError as e:
                print(f"error: BundleError: {e}", file=err)
                return 2
            part = evaluate_items(runner, ws, sv, av, args.scoring, influence=not args.no_influence)
            part["settings"] = {
                "scalingvis_alpha": sv, "scalingvis_source": sv_src, "adaptvis_source": av_src,
                "adaptvis": {"alpha_low": describe(av.low), "alpha_high": describe(av.high),
                             "threshold": float(av.threshold), "round_confidence": av.round_confidence,
                             "apply_to": av.apply_to}}
            name = ws.subset if ws.subset not in doc["subsets"] else f"{ws.subset} ({ws.source})"
            if plots and "histograms" in part and part["n"]:
                png = f"answers_{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.png"
                h = part["histograms"]
                answer_histograms(h["counts"], h["categories"], out_dir / png,
                                  f"{name}: baseline answers with the image and with a blank image")
                part["histogram_png"] = png
            doc["subsets"][name] = part
    doc["run"] = {**runner.stats(), "wall_seconds": round(time.perf_counter() - t0, 3), "cache": str(cache.path)}
    (out_dir / JSON_FILE).write_text(json.dumps(doc, indent=2) + "\n")
    (out_dir / REPORT_FILE).write_text(evaluation_markdown(doc, problems, runner.failures))
    for name, part in doc["subsets"].items():
        m = part["methods"]
        line = (f"{name} (n={part['n']}): baseline {m['baseline']['accuracy']:.1f}  "
                f"ScalingVis({part['settings']['scalingvis_alpha']:g}) {m['scalingvis']['accuracy']:.1f}  "
                f"AdaptVis {m['adaptvis']['accuracy']:.1f}")
        if "influence" in part and part["n"]:
            i = part["influence"]["all"]
            line += f"  | image influence: TV {i['mean_tv_distance']:.3f}, first token changed {i['first_token_changed']:.1f} %"
        al = part.get("alignment")
        if al and al.get("n"):
            g = al["groups"]["all"]
            k = "union" if "union" in g["chance"] else next(iter(g["chance"]), "union")
            line += (f"  | attention in the boxes: {_pct_text(g['alpha_1'].get(k))} at alpha 1 -> "
                     f"{_pct_text(g['chosen_alpha'].get(k))} at AdaptVis's alpha "
                     f"(chance {_pct_text(g['chance'].get(k))})")
        print(line, file=out)
    r = doc["run"]
    print(f"  model calls {r['model_calls']}, cached {r['cache_hits']}, {r['wall_seconds']:.1f} s; "
          f"report {out_dir / REPORT_FILE}", file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
