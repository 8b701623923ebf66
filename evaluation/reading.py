"""Does the model read the question?  The reading benchmark, per kind: ``just reading BUNDLE``.

    python -m evaluation.reading BUNDLE [--n 100] [--seed 12] [--dev-seed 11] [--dev-n 40]
        [--kinds standard,reversed,...] [--adaptvis LOW,HIGH,T --scalingvis-alpha A] [--jobs 2] [--out DIR]

Kinds (``scenes.synthetic.READING_KINDS``), drawn with held-out seeds (< 1000):

* ``standard``: the benchmark's scenes and question ("Where is the <smaller> in relation to the
  <bigger>? Answer with left, right, on or under."); ``reversed``: the same scenes, names swapped
  (truth: the inverse relation);
* ``similar``, ``colour_only``, ``shape_only``, ``distractor``: objects of alike size, pairs that
  differ only in colour or only in shape, a third object standing by; either object the subject;
* ``free``: the WhatsUp question without "Answer with ..."; ``yes_no``: "Is the red ball on the
  blue box? Answer yes or no." (half true); ``what``: "What is under the blue box?".

Scoring is strict (:func:`scenes.reading_scenes.score_reading`): exactly one option word (or
object name), the right one.  ``free`` also reports how many answers are a relation word (at
most three words, one of left/right/on/under) rather than an echo.

Methods: the unsteered baseline; ScalingVis and AdaptVis calibrated on a dev split (``--dev-seed``,
every kind): ScalingVis takes the constant alpha best on dev, AdaptVis the (low, high, threshold)
best on dev from the paper's grid (low 0.5/0.8, high 1.2/1.5/2.0, thresholds at the dev items'
confidences).  Both only rescale the last prompt token, so AdaptVis's answer is ScalingVis's at
the alpha it chose: each item is answered once per alpha and the grid is read off.  The blind
answer (the same question about a mean-colour image) and the confidence of right and wrong answers
are reported too.  Writes ``reading.md`` and ``reading.json`` into ``--out``.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

import runtime
from runtime import ScalingVis
from scenes.reading_scenes import READING_KINDS, reading_set, relation_word_only, score_reading
from scenes.synthetic import mean_colour_image

ALPHAS = (0.5, 0.8, 1.2, 1.5, 2.0)
LOWS, HIGHS = (0.5, 0.8), (1.2, 1.5, 2.0)
RENDER_SIZE = 336


_VLM = None


def _load(bundle: str) -> None:
    global _VLM
    _VLM = runtime.load(bundle)


def _answer_chunk(args) -> list[dict]:
    items, alphas, blind = args
    return [_answer_one(_VLM, scene, q, alphas, blind) for scene, q in items]


def _answer_one(vlm, scene, q, alphas: Sequence[float], blind: bool) -> dict:
    """The answer unsteered (with its confidence), at each alpha (the image prefix is cached), blind."""
    image = scene.render(RENDER_SIZE)
    base = vlm.answer(image, q.text, steering=None, max_new_tokens=6)
    rec = {"kind": scene.kind, "form": q.form, "question": q.text, "gold": q.answer,
           "confidence": float(base.confidence), "answers": {"1.0": base.text},
           "correct": {"1.0": score_reading(q, scene, base.text)}}
    for a in alphas:
        text = vlm.answer(image, q.text, steering=ScalingVis(a), max_new_tokens=6).text
        rec["answers"][str(a)], rec["correct"][str(a)] = text, score_reading(q, scene, text)
    if blind:
        text = vlm.answer(mean_colour_image(image), q.text, steering=None, max_new_tokens=6).text
        rec["answers"]["blind"], rec["correct"]["blind"] = text, score_reading(q, scene, text)
    return rec


def answer_all(pool, items, alphas: Sequence[float], blind: bool, label: str) -> list[dict]:
    """Per item (in order), :func:`_answer_one`, spread over the pool's worker processes."""
    from tqdm import tqdm          # optional: tqdm comes with the export extra, not the runtime

    chunks = [(items[i: i + 4], tuple(alphas), blind) for i in range(0, len(items), 4)]
    out = []
    with tqdm(total=len(items), desc=label, unit="item", leave=False) as bar:
        for recs in pool.imap(_answer_chunk, chunks):
            out.extend(recs)
            bar.update(len(recs))
    return out


def adaptvis_correct(rec: dict, low: float, high: float, threshold: float) -> bool:
    return rec["correct"][str(low if rec["confidence"] < threshold else high)]


def calibrate(dev: list[dict]) -> dict:
    """The best constant alpha and the best (low, high, threshold) on the dev records."""
    acc = lambda f: float(np.mean([f(r) for r in dev]))  # noqa: E731
    base = acc(lambda r: r["correct"]["1.0"])
    scaling = max(ALPHAS, key=lambda a: (acc(lambda r: r["correct"][str(a)]), -abs(a - 1)))
    thresholds = sorted({0.0, *np.round(np.quantile([r["confidence"] for r in dev], np.linspace(0, 1, 21)), 4)})
    best, best_acc = None, -1.0
    for low in LOWS:
        for high in HIGHS:
            for t in thresholds:
                a = acc(lambda r: adaptvis_correct(r, low, high, float(t)))
                if a > best_acc + 1e-12:
                    best, best_acc = (low, high, float(t)), a
    return {"dev_items": len(dev), "dev_baseline": base, "scalingvis_alpha": scaling,
            "dev_scalingvis": acc(lambda r: r["correct"][str(scaling)]), "adaptvis": best, "dev_adaptvis": best_acc}


def pct(xs) -> float | None:
    xs = list(xs)
    return round(100.0 * float(np.mean(xs)), 1) if xs else None


def summarize(records: list[dict], scaling: float, adaptvis: tuple[float, float, float]) -> dict:
    rows = {}
    for kind in dict.fromkeys(r["set"] for r in records):
        rs = [r for r in records if r["set"] == kind]
        steered = adaptvis is not None
        row = {"n": len(rs), "baseline": pct(r["correct"]["1.0"] for r in rs),
               "scalingvis": pct(r["correct"][str(scaling)] for r in rs) if steered else None,
               "adaptvis": pct(adaptvis_correct(r, *adaptvis) for r in rs) if steered else None,
               "blind": pct(r["correct"]["blind"] for r in rs if "blind" in r["correct"]),
               "below_threshold": sum(r["confidence"] < adaptvis[2] for r in rs) if steered else None,
               "confidence_right": pct_conf([r for r in rs if r["correct"]["1.0"]]),
               "confidence_wrong": pct_conf([r for r in rs if not r["correct"]["1.0"]])}
        if kind == "yes_no":
            row["answered_yes"] = pct(r["answers"]["1.0"].strip().lower().startswith("yes") for r in rs)
        if kind == "free":
            row["relation_word"] = pct(relation_word_only(r["answers"]["1.0"]) for r in rs)
        rows[kind] = row
    return rows


def pct_conf(rs: list[dict]) -> float | None:
    return round(float(np.mean([r["confidence"] for r in rs])), 3) if rs else None


def report(rows: dict, cal: dict, seed: int, bundle: str) -> str:
    if cal["adaptvis"] is None:
        setting = "Unsteered only."
    else:
        low, high, t = cal["adaptvis"]
        setting = (f"ScalingVis alpha {cal['scalingvis_alpha']}; AdaptVis low {low}, high {high}, threshold {t:.4f}, "
                   f"calibrated on {cal['dev_items']} dev items (dev: baseline {100 * cal['dev_baseline']:.1f} %, "
                   f"ScalingVis {100 * cal['dev_scalingvis']:.1f} %, AdaptVis {100 * cal['dev_adaptvis']:.1f} %).")
    lines = [f"# Reading benchmark: {bundle}", "", f"Held-out seed {seed}, strict scoring. {setting}", "",
             "| kind | n | baseline | ScalingVis | AdaptVis | blind | below threshold | confidence right / wrong | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for kind, r in rows.items():
        note = ""
        if "relation_word" in r:
            note = f"relation word {r['relation_word']} %"
        if "answered_yes" in r:
            note = f"answered yes {r['answered_yes']} %"
        blind = "" if r["blind"] is None else f"{r['blind']}"
        lines.append(f"| {kind} | {r['n']} | {r['baseline']} | {r['scalingvis']} | {r['adaptvis']} | {blind} | "
                     f"{r['below_threshold']} | {r['confidence_right']} / {r['confidence_wrong']} | {note} |")
    return "\n".join(lines) + "\n"


def _adaptvis_arg(text: str) -> tuple[float, float, float]:
    low, high, t = (float(x) for x in text.split(","))
    return low, high, t


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m evaluation.reading", description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--n", type=int, default=100, help="items per kind (default 100)")
    ap.add_argument("--seed", type=int, default=12, help="held-out test seed (< 1000)")
    ap.add_argument("--dev-seed", type=int, default=11, help="dev seed for the calibration (< 1000, not --seed)")
    ap.add_argument("--dev-n", type=int, default=40, help="dev items per kind")
    ap.add_argument("--kinds", default=",".join(READING_KINDS))
    ap.add_argument("--adaptvis", type=_adaptvis_arg, default=None, help="LOW,HIGH,T: skip the calibration")
    ap.add_argument("--scalingvis-alpha", type=float, default=None)
    ap.add_argument("--blind-kinds", default="standard,reversed,yes_no,what",
                    help="kinds also asked about a blank image")
    ap.add_argument("--out", type=Path, default=None, help="default runs/<bundle name>/reading")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes, each with the bundle loaded")
    ap.add_argument("--no-steering", action="store_true", help="the unsteered answers (and blind ones) only")
    args = ap.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    if any(k not in READING_KINDS for k in kinds):
        ap.error(f"--kinds: choose from {', '.join(READING_KINDS)}")
    if args.seed >= 1000 or args.dev_seed >= 1000 or args.seed == args.dev_seed:
        ap.error("--seed and --dev-seed must differ and be below 1000 (the held-out seeds)")
    out = args.out or Path("runs") / args.bundle.name / "reading"
    out.mkdir(parents=True, exist_ok=True)
    pool = multiprocessing.get_context("spawn").Pool(args.jobs, initializer=_load, initargs=(str(args.bundle),))
    t0 = time.perf_counter()
    if args.no_steering:
        cal = {"dev_items": 0, "scalingvis_alpha": None, "adaptvis": None}
    elif args.adaptvis is None or args.scalingvis_alpha is None:
        dev = [r for k in kinds for r in answer_all(pool, reading_set(k, args.dev_n, args.dev_seed, RENDER_SIZE),
                                                       ALPHAS, False, f"dev {k}")]
        cal = calibrate(dev)
    else:
        cal = {"dev_items": 0, "dev_baseline": float("nan"), "dev_scalingvis": float("nan"),
               "dev_adaptvis": float("nan")}
    if args.adaptvis is not None and not args.no_steering:
        cal["adaptvis"] = args.adaptvis
    if args.scalingvis_alpha is not None and not args.no_steering:
        cal["scalingvis_alpha"] = args.scalingvis_alpha
    alphas = [] if args.no_steering else sorted({cal["scalingvis_alpha"], *cal["adaptvis"][:2]} - {1.0})
    blind = set(args.blind_kinds.split(","))
    records = []
    for k in kinds:
        for r in answer_all(pool, reading_set(k, args.n, args.seed, RENDER_SIZE), alphas, k in blind, f"test {k}"):
            r["set"] = k
            records.append(r)
    pool.close()
    rows = summarize(records, cal["scalingvis_alpha"], cal["adaptvis"])
    text = report(rows, cal, args.seed, args.bundle.name)
    (out / "reading.md").write_text(text)
    (out / "reading.json").write_text(json.dumps({"seed": args.seed, "dev_seed": args.dev_seed, "calibration": cal,
                                                  "rows": rows, "seconds": round(time.perf_counter() - t0, 1),
                                                  "items": records}, indent=1) + "\n")
    print(text)
    print(f"wrote {out / 'reading.md'} and reading.json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
