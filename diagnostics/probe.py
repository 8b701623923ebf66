"""What the eyes knew: a linear probe on the image features vs the VLM's own answers.

    python -m diagnostics probe BUNDLE DATASET [--out DIR] [--train-fraction 0.5] [--seed 0]
        [--pool flatten|mean] [--max-grid 6] [--C 1.0] [--limit N] [--max-new-tokens 16]

The "Hidden in Plain Sight" diagnostic on the user's own data.  The vision graph's output
(the projected image tokens, exactly what the decoder receives in place of ``<image>``)
of every item feeds a logistic-regression probe trained on one split to predict the
item's answer (its gold option word: the relation), and tested on the rest.  Beside it,
on the same test items: the VLM's own accuracy (unsteered), with AdaptVis (evaluate's
default settings), and blind (the question about the item's blank image).  A probe far
above the VLM means the image features hold the answer and the language model does not
read it out.  The probe sees the image alone: that is the point where the answer is a
property of the image (the Controlled sets and the synthetic one: one relation per
image); where it depends on the text as well (VSR's captions) the probe can only learn
answer priors.

Features (``--pool``):

* ``flatten`` (default): every image token's features, concatenated in grid order, so
  *where* something is stays visible to a linear probe (a relation is about where).  The
  patch grid is first average-pooled to at most ``--max-grid`` cells per side (6: the
  ``spatial`` model's 6x6 grid and the tiny test models' grids are kept as they are;
  LLaVA-1.5's 24x24 becomes 6x6 cells of 4x4 patches, 147k features instead of 2.4M).
  A CLS token, where the bundle keeps one, is appended as one more cell.
* ``mean``: the mean over all image tokens (one vector of the projector's width):
  what the image holds regardless of where.

The probe (:func:`fit_probe`): features standardized with the training split's mean
and standard deviation; multinomial logistic regression with an L2 penalty, as
scikit-learn's ``LogisticRegression(C=1.0)`` (minimising ``sum of cross-entropies + ||W||^2 / (2 C)``, intercept
not penalised), solved by Newton's method with a backtracking line search, in numpy.
With more features than training items the weights lie in the span of the training
items (representer theorem), so the fit runs on the training items' Gram matrix and the
weights are mapped back: exact, and cheap for a few hundred items of any width.

The split is seeded (``--seed``); a Controlled set's (object, reference) groups stay
whole, so the test objects are ones the probe never saw (as in ``calibrate``).  Model
answers go through the result cache (``OUT/cache.jsonl``); ``OUT`` defaults to
``runs/<bundle name>/<subset>``, the folder ``evaluate`` uses, so their answers are shared.
Writes ``probe.md`` and ``probe.json`` (accuracies in percent; ``probe_accuracy``,
``vlm_accuracy``, ``blind_accuracy``, ``adaptvis_accuracy``, ``n_train``, ``n_test`` ...).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Sequence, TextIO

import numpy as np

from calibration.grid import dev_test_split
from evaluation.cache import ResultCache
from evaluation.evaluate import resolve_settings
from evaluation.runner import Runner, adaptvis, baseline, blank, bundle_digest
from evaluation.runs import CACHE_FILE, open_one_dataset
from evaluation.scoring import score_item
from runtime.attention import image_grid
from runtime.errors import RuntimeInputError
from runtime.images import load_image
from runtime.preprocess import pixel_values

POOLS = ("flatten", "mean")
PROBE_MD = "probe.md"
PROBE_JSON = "probe.json"


# ---------------------------------------------------------------------------------- the probe

@dataclass(frozen=True)
class Probe:
    """A fitted linear probe: ``argmax((x - mean) / std @ weights + bias)`` names the class."""

    classes: tuple
    mean: np.ndarray        # [d]
    std: np.ndarray         # [d]
    weights: np.ndarray     # [d, K]
    bias: np.ndarray        # [K]
    iterations: int
    train_loss: float

    def scores(self, X: np.ndarray) -> np.ndarray:
        Z = (np.asarray(X, dtype=np.float64) - self.mean) / self.std
        return Z @ self.weights + self.bias                                   # [n, K]

    def predict(self, X: np.ndarray) -> list:
        return [self.classes[k] for k in self.scores(X).argmax(axis=1)]


def _softmax(S: np.ndarray) -> np.ndarray:
    S = S - S.max(axis=1, keepdims=True)
    E = np.exp(S)
    return E / E.sum(axis=1, keepdims=True)


def _newton(R: np.ndarray, Y: np.ndarray, lam: float, max_iter: int, tol: float) -> tuple[np.ndarray, int, float]:
    """Minimise ``mean CE(softmax([R, 1] @ theta), Y) + lam / 2 * ||theta[:-1]||^2`` (the
    intercept row gets ``1e-8`` so the Hessian is definite).  Returns (theta [r+1, K], iterations, loss)."""
    n, r = R.shape
    K = Y.shape[1]
    R1 = np.hstack([R, np.ones((n, 1))])                                      # [n, r+1]
    pen = np.full(r + 1, lam)
    pen[-1] = 1e-8
    theta = np.zeros((r + 1, K))

    def loss(t):
        S = R1 @ t
        S = S - S.max(axis=1, keepdims=True)
        lse = np.log(np.exp(S).sum(axis=1))
        return float((lse - (S * Y).sum(axis=1)).mean() + 0.5 * (pen[:, None] * t * t).sum())

    f = loss(theta)
    it = 0
    for it in range(1, max_iter + 1):
        P = _softmax(R1 @ theta)                                              # [n, K]
        G = R1.T @ (P - Y) / n + pen[:, None] * theta                         # [r+1, K]
        H = np.zeros((K, r + 1, K, r + 1))
        for a in range(K):
            for b in range(a, K):
                w = P[:, a] * ((a == b) - P[:, b]) / n                         # [n]
                block = (R1 * w[:, None]).T @ R1
                H[a, :, b, :] = block
                H[b, :, a, :] = block.T
        H = H.reshape(K * (r + 1), K * (r + 1))
        H[np.diag_indices_from(H)] += np.tile(pen, K)
        g = G.T.reshape(-1)                                                   # class-major, like H
        try:
            step = np.linalg.solve(H, g)
        except np.linalg.LinAlgError:
            step = np.linalg.lstsq(H, g, rcond=None)[0]
        step = step.reshape(K, r + 1).T
        decrease = float((g * step.T.reshape(-1)).sum())
        t = 1.0
        while True:
            new = theta - t * step
            f_new = loss(new)
            if f_new <= f - 1e-4 * t * decrease or t < 1e-8:
                break
            t *= 0.5
        theta, f_old, f = new, f, f_new
        if abs(f_old - f) <= tol * max(1.0, abs(f)) or decrease < tol:
            break
    return theta, it, f


def fit_probe(X: np.ndarray, y: Sequence, C: float = 1.0, max_iter: int = 100, tol: float = 1e-10) -> Probe:
    """Multinomial logistic regression, L2 ``||W||^2 / (2 C)`` on standardized features (see module doc).

    ``X`` [n, d], ``y`` n labels (any hashable; classes in sorted order).  At least two classes."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] != len(y) or X.shape[0] == 0:
        raise ValueError(f"X must be [n, d] with one label per row; got {X.shape} and {len(y)} labels")
    if not C > 0:
        raise ValueError(f"C must be > 0, got {C}")
    classes = tuple(sorted(set(y), key=str))
    if len(classes) < 2:
        raise ValueError(f"the training split has {len(classes)} class(es): a probe needs two or more")
    n, d = X.shape
    mean = X.mean(axis=0)
    std = X.std(axis=0)
    std = np.where(std > 1e-12 * max(1.0, float(np.abs(mean).max(initial=0.0))), std, 1.0)
    Z = (X - mean) / std
    Y = np.zeros((n, len(classes)))
    Y[np.arange(n), [classes.index(v) for v in y]] = 1.0
    lam = 1.0 / (C * n)                       # sum-of-losses + ||W||^2/(2C)  ==  n * (mean loss + lam/2 ||W||^2)
    if d <= n:
        theta, it, f = _newton(Z, Y, lam, max_iter, tol)
        weights = theta[:-1]
    else:
        # W = Z^T A: fit on R = U s (Z = U s V^T), then W = V W_R = Z^T U s^-1 W_R.
        evals, U = np.linalg.eigh(Z @ Z.T)
        keep = evals > evals.max() * 1e-12
        s = np.sqrt(evals[keep])
        U = U[:, keep]
        theta, it, f = _newton(U * s, Y, lam, max_iter, tol)
        weights = Z.T @ ((U / s) @ theta[:-1])                                # [d, K]
    return Probe(classes, mean, std, weights, theta[-1], it, f)


def accuracy(predicted: Sequence, truth: Sequence) -> float:
    """Percent of equal pairs (0.0 for none)."""
    return 100.0 * sum(p == t for p, t in zip(predicted, truth)) / len(truth) if len(truth) else 0.0


# ---------------------------------------------------------------------------------- features

def pool_tokens(tokens: np.ndarray, grid: tuple[int, int], cls: bool, pool: str = "flatten",
                max_grid: int = 6) -> np.ndarray:
    """One feature vector from an image's tokens ``[T, C]`` (T = CLS? + rows * cols), see module doc."""
    tokens = np.asarray(tokens, dtype=np.float32)
    if pool == "mean":
        return tokens.mean(axis=0)
    if pool != "flatten":
        raise ValueError(f"pool must be one of {', '.join(POOLS)}, got {pool!r}")
    rows, cols = grid
    patches = tokens[int(cls):].reshape(rows, cols, -1)                      # [rows, cols, C]
    rb = np.array_split(np.arange(rows), min(rows, max_grid))
    cb = np.array_split(np.arange(cols), min(cols, max_grid))
    cells = np.stack([np.stack([patches[r][:, c].mean(axis=(0, 1)) for c in cb]) for r in rb])   # [r', c', C]
    parts = [cells.reshape(-1)] + ([tokens[0]] if cls else [])
    return np.concatenate(parts)


def image_features(vlm, image, pool: str = "flatten", max_grid: int = 6) -> np.ndarray:
    """The pooled projected image tokens of one image (``vlm.sessions.image_features``)."""
    pixels = pixel_values(load_image(image), vlm.manifest.preprocessing)     # [1, 3, H, W]
    tokens = vlm.sessions.image_features(pixels)[0]                           # [T, C]
    rows, cols, cls = image_grid(vlm.manifest)
    return pool_tokens(tokens, (rows, cols), cls, pool, max_grid)


# ---------------------------------------------------------------------------------- the run

def run_probe(vlm, runner, ws, train_fraction: float = 0.5, seed: int = 0, pool: str = "flatten",
              max_grid: int = 6, C: float = 1.0, scoring: str = "reference", steering=None,
              err: TextIO = sys.stderr) -> dict:
    """Features, split, probe, and the VLM's answers on the test items: probe.json's content."""
    feats, items = [], []
    for it in ws.items:
        try:
            feats.append(image_features(vlm, it.image_path, pool, max_grid))
            items.append(it)
        except (RuntimeInputError, OSError) as e:
            print(f"{it.source}: {it.id}: skipped: {type(e).__name__}: {e}", file=err)
    if not items:
        raise ProbeError("no item's image could be read")
    by_id = {it.id: k for k, it in enumerate(items)}
    groups = {it.id: it.group for it in items} if all(it.group is not None for it in items) else None
    train, test = dev_test_split(list(by_id), train_fraction, seed, groups)
    if not train or not test:
        raise ProbeError(f"{len(items)} items split into train={len(train)} and test={len(test)}: both must be "
                         f"non-empty (more items, or another --train-fraction)")
    X = np.stack(feats)
    y = [it.gold for it in items]
    tr, te = [by_id[i] for i in train], [by_id[i] for i in test]
    if len({y[k] for k in tr}) < 2:
        raise ProbeError(f"the training split holds only the answer {y[tr[0]]!r}: a probe needs two or more")
    t0 = time.perf_counter()
    probe = fit_probe(X[tr], [y[k] for k in tr], C=C)
    fit_s = time.perf_counter() - t0
    pred_test = probe.predict(X[te])
    pred_train = probe.predict(X[tr])

    # The VLM on the same test items (through the cache).
    test_items = [items[k] for k in te]
    # AdaptVis asks for the box alignment as evaluate does (same cache record, so evaluate need not redo it).
    passes = [baseline(), blank()] + ([adaptvis(steering, alignment=True)] if steering is not None else [])
    res = runner.run([(it, p) for it in test_items for p in passes], "probe: the VLM on the test items")
    kept = [k for k, it in zip(te, test_items) if it.id not in runner.failures]

    def vlm_acc(p) -> Optional[float]:
        if not kept:
            return None
        return 100.0 * sum(score_item(items[k], res[(items[k].id, p.name)]["text"], scoring) for k in kept) / len(kept)

    truth_test = [y[k] for k in te]
    train_counts = Counter(y[k] for k in tr)
    majority = train_counts.most_common(1)[0][0]
    per_class = {}
    for c in sorted(set(y), key=str):
        idx = [j for j, k in enumerate(te) if y[k] == c]
        per_class[c] = {"n_train": train_counts.get(c, 0), "n_test": len(idx),
                        "probe_accuracy": accuracy([pred_test[j] for j in idx], [c] * len(idx)) if idx else None}
    rows, cols, cls = _grid(vlm)
    return {
        "probe_accuracy": accuracy(pred_test, truth_test),
        "probe_stderr": _stderr(accuracy(pred_test, truth_test), len(te)),
        "vlm_accuracy": vlm_acc(baseline()),
        "adaptvis_accuracy": vlm_acc(adaptvis(steering)) if steering is not None else None,
        "blind_accuracy": vlm_acc(blank()),
        "train_accuracy": accuracy(pred_train, [y[k] for k in tr]),
        "majority_accuracy": accuracy([majority] * len(te), truth_test),
        "chance_accuracy": 100.0 / len(probe.classes),
        "n_train": len(tr), "n_test": len(te), "n_test_vlm": len(kept), "n_items": len(items),
        "classes": list(probe.classes), "per_class": per_class,
        "split": {"train_fraction": train_fraction, "seed": seed, "groups_kept_whole": groups is not None},
        "features": {"source": "vision graph: projected image tokens", "pool": pool, "max_grid": max_grid,
                     "dims": int(X.shape[1]), "image_tokens": vlm.manifest.image_tokens_per_image,
                     "grid": [rows, cols], "cls_token": bool(cls)},
        "probe": {"model": "multinomial logistic regression, L2, standardized features, Newton (numpy)",
                  "C": C, "iterations": probe.iterations, "train_loss": probe.train_loss,
                  "fit_seconds": round(fit_s, 3)},
    }


def _stderr(pct: float, n: int) -> float:
    """One binomial standard error of an accuracy in percent over n items."""
    p = pct / 100.0
    return 100.0 * float(np.sqrt(p * (1 - p) / n)) if n else 0.0


def _grid(vlm):
    return image_grid(vlm.manifest)


class ProbeError(ValueError):
    """Nothing sensible to probe (no readable item, a split without two classes ...)."""


def _f(v) -> str:
    return "n/a" if v is None else f"{v:.1f}"


def _verdict(doc: dict, gap: Optional[float]) -> str:
    """One sentence: what the numbers say (differences within two standard errors are called even)."""
    noise = 2 * max(doc["probe_stderr"], 1e-9)
    floor = max(doc["majority_accuracy"], doc["chance_accuracy"])
    if doc["probe_accuracy"] <= floor + noise:
        return ("The probe is not clearly above chance / the majority answer: a linear read-out of these "
                "features does not find the answer here" + ("." if gap is None else f" (probe minus VLM: {gap:+.1f} points)."))
    if gap is None:
        return ""
    if gap > noise:
        return (f"Probe minus VLM: {gap:+.1f} points: the image features hold answers the language model "
                f"does not read out.")
    if gap < -noise:
        return f"Probe minus VLM: {gap:+.1f} points: the model answers better than a linear read-out of its eyes."
    return f"Probe minus VLM: {gap:+.1f} points, within the noise: the model says about what its eyes hold."


def probe_markdown(doc: dict) -> str:
    ft, sp = doc["features"], doc["split"]
    gap = None if doc["vlm_accuracy"] is None else doc["probe_accuracy"] - doc["vlm_accuracy"]
    lines = [f"# What the eyes knew: {doc['dataset']['subset']}", "",
             f"Bundle `{doc['bundle']}` (sha256 `{doc['bundle_sha256'][:16]}...`), dataset `{doc['dataset']['path']}`, "
             f"{doc['created']}.", "",
             f"A linear probe (multinomial logistic regression, L2 with C = {doc['probe']['C']:g}, standardized "
             f"features) on the vision graph's projected image tokens ({ft['pool']}: {ft['dims']} features from "
             f"{ft['image_tokens']} tokens on a {ft['grid'][0]}x{ft['grid'][1]} grid"
             f"{' + CLS' if ft['cls_token'] else ''}), trained on {doc['n_train']} items to predict the answer "
             f"({', '.join(map(str, doc['classes']))}), tested on the other {doc['n_test']} "
             f"(split seed {sp['seed']}, train fraction {sp['train_fraction']}"
             f"{', object pairs kept whole: the test objects are unseen' if sp['groups_kept_whole'] else ''}).", "",
             "## Accuracy on the test items (%)", "",
             "| what | accuracy |", "|---|---|",
             f"| linear probe on the image features | {_f(doc['probe_accuracy'])} |",
             f"| the VLM, unsteered | {_f(doc['vlm_accuracy'])} |"]
    if doc.get("adaptvis_accuracy") is not None:
        lines.append(f"| the VLM with AdaptVis ({doc.get('adaptvis_source', '')}) | {_f(doc['adaptvis_accuracy'])} |")
    lines += [f"| the VLM, blind (blank image) | {_f(doc['blind_accuracy'])} |",
              f"| majority answer of the training split | {_f(doc['majority_accuracy'])} |",
              f"| chance (1 / {len(doc['classes'])}) | {_f(doc['chance_accuracy'])} |", "",
              f"The probe fits its training split to {_f(doc['train_accuracy'])} %; on the test items "
              f"{_f(doc['probe_accuracy'])} % +- {_f(doc['probe_stderr'])} (one binomial standard error). "
              + _verdict(doc, gap)
              + (f" The VLM was scored on {doc['n_test_vlm']} of them (the rest failed)."
                 if doc["n_test_vlm"] != doc["n_test"] else ""), "",
              "## Per answer", "", "| answer | train items | test items | probe accuracy |", "|---|---|---|---|"]
    lines += [f"| {c} | {v['n_train']} | {v['n_test']} | {_f(v['probe_accuracy'])} |" for c, v in doc["per_class"].items()]
    return "\n".join(lines) + "\n"


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("bundle", type=Path, help="bundle folder")
    ap.add_argument("dataset", help="anything readers.datasets.load_dataset reads (file or folder)")
    ap.add_argument("--subset", help="which subset, when DATASET is a folder holding several")
    ap.add_argument("--image-root", type=Path, help="where the images are (default: next to the annotation file)")
    ap.add_argument("--out", type=Path, help="output folder (default runs/<bundle name>/<subset>)")
    ap.add_argument("--cache", type=Path, help="result cache file (default OUT/cache.jsonl)")
    ap.add_argument("--limit", type=int, help="use at most N items (whole groups for the Controlled sets)")
    ap.add_argument("--train-fraction", type=float, default=0.5, help="share of items the probe trains on (default 0.5)")
    ap.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    ap.add_argument("--pool", choices=POOLS, default="flatten", help="token features: flatten (default) or mean")
    ap.add_argument("--max-grid", type=int, default=6, help="flatten: pool the patch grid to at most N x N cells (6)")
    ap.add_argument("--C", type=float, default=1.0, dest="C", help="inverse L2 strength, as scikit-learn (default 1)")
    ap.add_argument("--max-new-tokens", type=int, default=16, help="tokens generated per VLM answer (default 16)")
    ap.add_argument("--scoring", choices=["reference", "reference-strict", "strict"], default="reference")
    ap.add_argument("--no-adaptvis", action="store_true", help="skip the AdaptVis answers (one pass per test item)")
    ap.add_argument("--provider", action="append", help="cpu (default), cuda or tensorrt; repeatable")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args, ap: argparse.ArgumentParser, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    if not 0.0 < args.train_fraction < 1.0:
        ap.error(f"--train-fraction must be in (0, 1), got {args.train_fraction}")
    if args.max_new_tokens < 1 or args.max_grid < 1 or not args.C > 0:
        ap.error("--max-new-tokens and --max-grid must be positive, --C > 0")
    if args.limit is not None and args.limit < 1:
        ap.error("--limit must be positive")
    t0 = time.perf_counter()
    opened = open_one_dataset(args, err)
    if opened is None:
        return 2
    ws, vlm, out_dir = opened
    steering, source = None, None
    if not args.no_adaptvis:
        _, _, steering, source = resolve_settings(vlm.bundle.calibration, vlm.default_steering, ws.subset, None, None)
    digest = bundle_digest(vlm)
    with ResultCache(args.cache or out_dir / CACHE_FILE) as cache:
        runner = Runner(vlm, cache, args.max_new_tokens, progress=not args.quiet, err=err, bundle=digest)
        try:
            result = run_probe(vlm, runner, ws, args.train_fraction, args.seed, args.pool, args.max_grid, args.C,
                               args.scoring, steering, err)
        except ProbeError as e:
            print(f"error: {e}", file=err)
            return 2
    doc = {**result, "adaptvis_source": source, "bundle": str(args.bundle), "bundle_sha256": digest,
           "dataset": {"path": str(ws.source), "subset": ws.subset, "n_loaded": ws.n_loaded,
                       "problems": len(ws.problems)},
           "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "tool": "python -m diagnostics probe", "max_new_tokens": args.max_new_tokens, "scoring": args.scoring,
           "run": {**runner.stats(), "wall_seconds": round(time.perf_counter() - t0, 3), "cache": str(cache.path)}}
    (out_dir / PROBE_JSON).write_text(json.dumps(doc, indent=2) + "\n")
    (out_dir / PROBE_MD).write_text(probe_markdown(doc))
    print(f"{ws.subset}: probe {_f(doc['probe_accuracy'])} %  VLM {_f(doc['vlm_accuracy'])} %"
          + ("" if doc["adaptvis_accuracy"] is None else f"  AdaptVis {_f(doc['adaptvis_accuracy'])} %")
          + f"  blind {_f(doc['blind_accuracy'])} %  (train {doc['n_train']}, test {doc['n_test']}); "
          f"report {out_dir / PROBE_MD}", file=out)
    return 0
