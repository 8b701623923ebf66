"""One picture of where the model looked: ``python -m diagnostics explain BUNDLE IMAGE "question"``.

    python -m diagnostics explain BUNDLE IMAGE "question" [--layers A:B] [--out FILE.png]
        [--low L --high H --threshold T] [--box NAME=x0,y0,x1,y1 ...] [--max-new-tokens 16]

Answers the question with AdaptVis (the bundle's calibration, else the paper's defaults;
``--low`` / ``--high`` / ``--threshold`` override) and ``return_attention=True``, then
writes one PNG (default ``build/explain/<image stem>_explain.png``) and prints its path:

* left, the image with the last prompt token's attention over it at alpha = 1 (the
  confidence pass); right, the same at the alpha AdaptVis chose.  The maps are the mean
  over ``--layers`` (Python slice ``A:B`` of the decoder layers, 0-based, B exclusive;
  one number for one layer; default: the middle half, :func:`evaluation.alignment.middle_layers`),
  drawn on the rectangle of the image the model's picture covers (``AttentionMaps.box``;
  dashed where it differs from the image), one colour scale for both panels: the
  fraction of the row's attention on each patch;
* attention sinks marked: patches that take more than ``SINK_FACTOR`` times an even share
  of the map both on the image (either pass) and on a blank copy of it (the image's mean
  colour, alpha = 1, one more prefill).  What the model parks there follows the position,
  not the content (a decoder's attention sink), so they are drawn with a dashed square
  and left out of the colour scale, which the other patches then set;
* above, the question, the answer, the confidence, the threshold and the alpha applied;
* below, each layer's image share (the row's attention on all image tokens) for both
  passes, the chosen layers shaded.

``--box`` draws an object's box (original-image pixels, x1/y1 exclusive) on both panels
and gives the share of the map inside it.  Prints the same numbers as text.  Without
matplotlib it prints them and one line saying which extra to install, writes nothing and
exits 1.
"""
from __future__ import annotations

import argparse
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence, TextIO

import numpy as np
from PIL import Image

import runtime
from evaluation.alignment import box_coverage, middle_layers, parse_box, share_inside
from evaluation.plots import MISSING_MATPLOTLIB, have_matplotlib, pyplot
from runtime.errors import RuntimeInputError
from runtime.images import load_image
from runtime.steering import AdaptVis

MIN_SIDE = 300          # px; the figure is well above it
DEFAULT_DIR = Path("build/explain")
# A sink takes more than this many even shares (1 / patches) of the map, on the image and on a blank
# copy: 4 is 11 % of a 6 x 6 grid; the spatial model's top-left corner takes 19-30 % on both, its
# objects' patches 4-6 % and no other blank patch 15 %.
SINK_FACTOR = 4.0


@dataclass
class Explanation:
    """Everything the PNG shows, from one ``vlm.answer(..., return_attention=True)``."""

    question: str
    answer: str
    confidence: Optional[float]
    alpha: object                       # the applied alpha (float or per-layer list)
    low: object
    high: object
    threshold: float
    layers: tuple[int, int]             # [start, stop)
    num_layers: int
    picture: object                     # PIL image (RGB)
    box: tuple[float, float, float, float]
    maps: dict                          # "confidence" / "rescaled" -> [rows, cols] mean over the layers
    image_share: dict                   # "confidence" / "rescaled" -> [L]
    boxes: dict = field(default_factory=dict)        # name -> (x0, y0, x1, y1)
    box_shares: dict = field(default_factory=dict)   # pass -> name -> share of the map inside
    blank_map: Optional[np.ndarray] = None           # [rows, cols] alpha = 1 on a blank copy, same layers
    sinks: Optional[np.ndarray] = None               # bool [rows, cols]: see sink_patches


def parse_layers(text: Optional[str], num_layers: int) -> tuple[int, int]:
    """``"A:B"`` (Python slice, either end optional, negatives from the end) or ``"A"`` ->
    ``[start, stop)`` within ``num_layers``; None -> the middle layers.  ValueError if empty."""
    if text is None:
        return middle_layers(num_layers)
    try:
        if ":" in text:
            a, b = text.split(":", 1)
            s = slice(int(a) if a.strip() else None, int(b) if b.strip() else None)
        else:
            k = int(text)
            k = k + num_layers if k < 0 else k
            s = slice(k, k + 1)
    except ValueError:
        raise ValueError(f"--layers wants A:B or A (integers), got {text!r}") from None
    start, stop, _ = s.indices(num_layers)
    if stop <= start:
        raise ValueError(f"--layers {text} selects no layer of {num_layers}")
    return start, stop


def explain(vlm, image, question: str, steering=None, layers: Optional[str] = None,
            boxes: Optional[Mapping[str, Sequence[float]]] = None, max_new_tokens: int = 16) -> Explanation:
    """Answer with AdaptVis (``steering``, default the bundle's) and collect what the PNG shows."""
    steering = vlm.default_steering if steering is None else steering
    if not isinstance(steering, AdaptVis):
        raise TypeError("explain compares alpha = 1 with the alpha AdaptVis chooses: steering must be AdaptVis")
    picture = load_image(image)
    ans = vlm.answer(picture, question, steering=steering, max_new_tokens=max_new_tokens, return_attention=True)
    att = ans.attention
    num_layers = int(att["confidence"].maps.shape[0])
    span = parse_layers(layers, num_layers)
    maps = {k: att[k].maps[span[0]: span[1]].mean(axis=0) for k in ("confidence", "rescaled")}
    parsed = {str(k): parse_box(v) for k, v in (boxes or {}).items()}
    bad = [k for k, v in parsed.items() if v is None]
    if bad:
        raise ValueError(f"box {bad[0]!r} is not x0,y0,x1,y1 with x1 > x0 and y1 > y0")
    grid = tuple(maps["confidence"].shape)
    shares = {k: {n: float(share_inside(m, box_coverage(b, att[k].box, grid))[0]) for n, b in parsed.items()}
              for k, m in maps.items()}
    blank = vlm.answer(_blank_copy(picture), question, steering=None, max_new_tokens=1, return_attention=True)
    blank_map = blank.attention["confidence"].maps[span[0]: span[1]].mean(axis=0)
    sinks = sink_patches(blank_map, *maps.values())
    return Explanation(question=question, answer=ans.text, confidence=ans.confidence, alpha=ans.alpha,
                       low=steering.low, high=steering.high, threshold=float(steering.threshold),
                       layers=span, num_layers=num_layers, picture=picture, box=att["confidence"].box,
                       maps=maps, image_share={k: att[k].image_share for k in ("confidence", "rescaled")},
                       boxes=parsed, box_shares=shares, blank_map=blank_map, sinks=sinks)


def _blank_copy(picture):
    mean = np.asarray(picture.convert("RGB"), dtype=np.float64).reshape(-1, 3).mean(axis=0)
    return Image.new("RGB", picture.size, tuple(int(round(v)) for v in mean))


def _shares(m: np.ndarray) -> np.ndarray:
    return m / max(float(m.sum()), 1e-12)


def sink_patches(blank_map: np.ndarray, *image_maps: np.ndarray, factor: float = SINK_FACTOR) -> np.ndarray:
    """bool [rows, cols]: patches over ``factor`` even shares of the map on the blank copy and on any image map."""
    even = factor / blank_map.size
    hot_on_image = np.zeros(blank_map.shape, dtype=bool)
    for m in image_maps:
        hot_on_image |= _shares(m) > even
    return hot_on_image & (_shares(blank_map) > even)


def colour_max(e: Explanation) -> float:
    """The top of the colour scale: the hottest patch of both panels that is not a sink."""
    keep = np.ones(e.maps["confidence"].shape, dtype=bool) if e.sinks is None else ~e.sinks
    if not keep.any():
        keep = np.ones_like(keep)
    return max(float(m[keep].max()) for m in e.maps.values()) or 1.0


def _alpha(a) -> str:
    if isinstance(a, (int, float)):
        return f"{a:g}"
    flat = np.asarray(a, dtype=float).ravel()
    return f"per-layer ({flat.min():g}..{flat.max():g})"


def _which(e: Explanation) -> str:
    if e.confidence is None:
        return ""
    return "low" if e.confidence < e.threshold else "high"


def describe(e: Explanation) -> str:
    """The numbers of the PNG, as text."""
    lo, hi = e.layers
    conf = "n/a" if e.confidence is None else f"{e.confidence:.3f}"
    lines = [f"question:   {e.question}", f"answer:     {e.answer!r}",
             f"confidence: {conf} (threshold {e.threshold:g}) -> alpha_{_which(e)} = {_alpha(e.alpha)} "
             f"(alpha_low {_alpha(e.low)}, alpha_high {_alpha(e.high)})",
             f"layers:     {lo}..{hi - 1} of {e.num_layers}"]
    for k, label in (("confidence", "alpha = 1"), ("rescaled", f"alpha = {_alpha(e.alpha)}")):
        share = e.image_share[k]
        lines.append(f"{label:>14}: image share {100 * float(np.mean(share[lo:hi])):.1f} % over these layers; per layer "
                     + " ".join(f"{100 * float(v):.1f}" for v in share))
        for n, v in e.box_shares.get(k, {}).items():
            lines.append(f"{'':>16}inside box {n}: {100 * v:.1f} % of the map")
    for r, c in zip(*np.nonzero(e.sinks)) if e.sinks is not None else ():
        lines.append(f"sink patch: row {r}, column {c}: {100 * _shares(e.maps['confidence'])[r, c]:.1f} % of the map "
                     f"at alpha = 1, {100 * _shares(e.blank_map)[r, c]:.1f} % on a blank copy (marked, not in the colour scale)")
    return "\n".join(lines)


def render(e: Explanation, path: str | Path, dpi: int = 100) -> Path:
    """Write the PNG (needs matplotlib)."""
    plt = pyplot()
    from matplotlib import patheffects             # optional: matplotlib (the calibration extra)
    from matplotlib.patches import Rectangle

    W, H = e.picture.size
    left, top, right, bottom = e.box
    x0, x1 = min(0.0, left), max(float(W), right)
    y0, y1 = min(0.0, top), max(float(H), bottom)
    aspect = (y1 - y0) / max(x1 - x0, 1e-9)
    conf = "n/a" if e.confidence is None else f"{e.confidence:.3f}"
    q = textwrap.fill(f"Q: {e.question}", 90)
    a = textwrap.shorten(f"A: {e.answer.strip() or '(empty)'}", 90, placeholder=" ...")
    title = f"{q}\n{a}\nconfidence {conf} vs threshold {e.threshold:g}  ->  alpha = {_alpha(e.alpha)}"
    # Heights in inches: the title, the panels' titles, the panels, a gap, the layer plot, its axis label.
    panel_w = 4.25                                           # what two panels and a colour bar get of 10.5 in
    panel_h = min(max(panel_w * aspect, 2.2), 6.5)
    title_h, heads, gap, plot_h, foot = 0.24 * (title.count("\n") + 1) + 0.2, 0.55, 0.45, 1.5, 0.55
    fig_h = title_h + heads + panel_h + gap + plot_h + foot
    fig = plt.figure(figsize=(10.5, fig_h), dpi=dpi)
    gs = fig.add_gridspec(2, 3, height_ratios=[panel_h, plot_h], width_ratios=[1, 1, 0.05],
                          hspace=gap / ((panel_h + plot_h) / 2), wspace=0.1,
                          top=1 - (title_h + heads) / fig_h, bottom=foot / fig_h, left=0.07, right=0.92)
    vmax = colour_max(e)
    lo, hi = e.layers
    layer_text = f"layer {lo}" if hi - lo == 1 else f"mean of layers {lo}..{hi - 1}"
    im = None
    panels = (("confidence", "alpha = 1 (confidence pass)"),
              ("rescaled", f"alpha = {_alpha(e.alpha)} (AdaptVis, alpha_{_which(e)})"))
    for col, (k, head) in enumerate(panels):
        ax = fig.add_subplot(gs[0, col])
        ax.imshow(np.asarray(e.picture), extent=(0, W, H, 0), interpolation="bilinear")
        im = ax.imshow(e.maps[k], extent=(left, right, bottom, top), cmap="inferno", alpha=0.6,
                       interpolation="nearest", vmin=0.0, vmax=vmax)
        if (left, top, right, bottom) != (0.0, 0.0, float(W), float(H)):
            ax.add_patch(Rectangle((left, top), right - left, bottom - top, fill=False, ls="--", lw=1.2,
                                   edgecolor="white"))
        rows, cols = e.maps[k].shape
        cw, ch = (right - left) / cols, (bottom - top) / rows
        for r, c in zip(*np.nonzero(e.sinks)) if e.sinks is not None else ():
            ax.add_patch(Rectangle((left + c * cw, top + r * ch), cw, ch, fill=False, ls="--", lw=1.5, edgecolor="lime"))
            ax.annotate("sink", xy=(left + (c + 0.5) * cw, top + (r + 0.5) * ch), color="lime", fontsize=8,
                        ha="center", va="center", path_effects=[patheffects.withStroke(linewidth=2, foreground="black")])
        for n, (bx0, by0, bx1, by1) in e.boxes.items():
            ax.add_patch(Rectangle((bx0, by0), bx1 - bx0, by1 - by0, fill=False, lw=2, edgecolor="cyan"))
            ax.annotate(f"{n}: {100 * e.box_shares[k][n]:.0f} %", xy=(bx0, by0), xytext=(2, 3),
                        textcoords="offset points", color="cyan", fontsize=10, va="bottom", ha="left",
                        fontweight="bold", path_effects=[patheffects.withStroke(linewidth=2.5, foreground="black")])
        ax.set_xlim(x0, x1)
        ax.set_ylim(y1, y0)
        ax.set_xticks([])
        ax.set_yticks([])
        share = 100 * float(np.mean(e.image_share[k][lo:hi]))
        ax.set_title(f"{head}\nimage share {share:.1f} %, {layer_text}", fontsize=11)
    cax = fig.add_subplot(gs[0, 2])
    label = "attention per patch (fraction of the row)" + ("; sinks above the scale" if e.sinks is not None
                                                              and e.sinks.any() else "")
    fig.colorbar(im, cax=cax).set_label(label, fontsize=9)

    ax = fig.add_subplot(gs[1, :2])
    xs = np.arange(e.num_layers)
    ax.plot(xs, 100 * np.asarray(e.image_share["confidence"]), "o-", label="alpha = 1")
    ax.plot(xs, 100 * np.asarray(e.image_share["rescaled"]), "s-", label=f"alpha = {_alpha(e.alpha)}")
    ax.axvspan(lo - 0.5, hi - 0.5, color="0.85", zorder=0, label="layers shown above")
    ax.set_xlim(-0.5, e.num_layers - 0.5)
    ax.set_xlabel("decoder layer")
    ax.set_ylabel("image share (%)")
    ax.set_xticks(xs if e.num_layers <= 32 else xs[:: int(np.ceil(e.num_layers / 32))])
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)

    fig.suptitle(title, fontsize=12, y=1 - 0.12 / fig_h, va="top")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------- CLI

def _box_arg(text: str) -> tuple[str, list[float]]:
    name, _, coords = text.partition("=")
    try:
        vals = [float(v) for v in coords.split(",")]
    except ValueError:
        vals = []
    if not name or parse_box(vals) is None:
        raise argparse.ArgumentTypeError(f"--box wants NAME=x0,y0,x1,y1 with x1 > x0, y1 > y0; got {text!r}")
    return name, vals


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("bundle", type=Path, help="bundle folder")
    ap.add_argument("image", help="image file")
    ap.add_argument("question")
    ap.add_argument("--layers", help="decoder layers A:B (0-based, B exclusive) or A; default: the middle half")
    ap.add_argument("--out", type=Path, help=f"PNG to write (default {DEFAULT_DIR}/<image stem>_explain.png)")
    ap.add_argument("--low", type=float, help="AdaptVis alpha_low (default: the bundle's calibration)")
    ap.add_argument("--high", type=float, help="AdaptVis alpha_high")
    ap.add_argument("--threshold", type=float, help="AdaptVis confidence threshold")
    ap.add_argument("--box", type=_box_arg, action="append", metavar="NAME=x0,y0,x1,y1",
                    help="draw an object's box (original pixels) and report the attention inside; repeatable")
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--provider", action="append", help="cpu (default), cuda or tensorrt; repeatable")


def run(args, ap: argparse.ArgumentParser, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    if args.max_new_tokens < 1:
        ap.error("--max-new-tokens must be positive")
    try:
        vlm = runtime.load(args.bundle, providers=args.provider or ["cpu"])
        base = vlm.default_steering
        steering = runtime.AdaptVis(low=base.low if args.low is None else args.low,
                                    high=base.high if args.high is None else args.high,
                                    threshold=base.threshold if args.threshold is None else args.threshold,
                                    round_confidence=base.round_confidence, apply_to=base.apply_to)
        e = explain(vlm, args.image, args.question, steering, args.layers, dict(args.box or []),
                    args.max_new_tokens)
    except (RuntimeInputError, ValueError) as ex:
        print(f"error: {type(ex).__name__}: {ex}", file=err)
        return 2
    print(describe(e), file=out)
    if not have_matplotlib():
        print(MISSING_MATPLOTLIB, file=err)
        return 1
    target = args.out or DEFAULT_DIR / f"{Path(args.image).stem}_explain.png"
    render(e, target)
    print(f"wrote {target}", file=out)
    return 0
