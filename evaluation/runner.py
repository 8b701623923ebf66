"""Run model passes over benchmark items, each (item, pass) at most once, with a resumable cache.

A *pass* is one ``vlm.answer`` call on an item:

==================  ==========================================================  ==========================
name                call                                                        gives
==================  ==========================================================  ==========================
``none``            ``answer(image, q, steering=None)``                         the unsteered answer and
                                                                                the confidence (alpha = 1)
``alpha=<a>``       ``answer(image, q, steering=ScalingVis(a))``                the answer rescaled by a:
                                                                                AdaptVis's second pass
                                                                                when it picks a
``adaptvis=<...>``  ``answer(image, q, steering=AdaptVis(low, high, th))``      the full AdaptVis answer
``blank``           ``answer(blank image, q, steering=None)``                   the answer without the
                                                                                image (blind test)
==================  ==========================================================  ==========================

``none`` may also measure the image influence (``measure_image_influence=True``); a
cached ``none`` record without it does not satisfy a pass that asks for it.

A pass with ``alignment=True`` (evaluate's AdaptVis pass) also asks for the attention
maps (``return_attention=True``) on items that have ``boxes``, when the bundle's decoder
has attention outputs, and stores in the record only the shares of image attention
inside each box, per layer and pass (``"alignment"``: see
:func:`evaluation.alignment.alignment`), never the maps.  A cached record without
``"alignment"`` (written before it existed) does not satisfy such a pass on such an
item: it is recomputed (once; the new record replaces it).  With a bundle that has no
attention outputs the pass runs as before and the records carry no alignment.  The blank
image is the item's ``blank_image_path`` when it has one, else a mean-colour image of the
same size (:func:`scenes.synthetic.mean_colour_image`).

Jobs run item by item, so the runtime's per-image prefix cache is hit by every pass of
an item after the first.  A model call that fails on bad input (a missing or corrupt
image) is reported with the item's ``file:line`` and the run goes on without that item.
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence, TextIO

from PIL import Image

from readers.items import Item
from runtime.errors import RuntimeInputError
from runtime.steering import AdaptVis, ScalingVis, describe
from scenes.synthetic import mean_colour_image

from .alignment import alignment, parse_boxes
from .cache import ResultCache, make_key

NONE = "none"
BLANK = "blank"


@dataclass(frozen=True)
class Pass:
    name: str
    steering: object = None          # None, ScalingVis or AdaptVis
    blank: bool = False              # answer about the blank image instead of the item's image
    influence: bool = False          # measure_image_influence=True
    alignment: bool = False          # attention inside the item's boxes (items with boxes; see module doc)


def baseline(influence: bool = False) -> Pass:
    return Pass(NONE, None, influence=influence)


def alpha_name(alpha) -> str:
    return f"alpha={json.dumps(describe(alpha))}"


def scaling(alpha) -> Pass:
    return Pass(alpha_name(alpha), ScalingVis(alpha))


def adaptvis(s: AdaptVis, alignment: bool = False) -> Pass:
    name = (f"adaptvis={json.dumps(describe(s.low))},{json.dumps(describe(s.high))},{float(s.threshold)!r},"
            f"{'rounded' if s.round_confidence else 'exact'},{s.apply_to}")
    return Pass(name, s, alignment=alignment)


def blank() -> Pass:
    return Pass(BLANK, None, blank=True)


def bundle_digest(vlm) -> str:
    """The loaded bundle's ``model_sha256``: its manifest (every graph's and the tokenizer's sha256), less the
    calibration's digest, so results cached before ``just calibrate`` re-signed the bundle are still found."""
    return vlm.bundle.model_sha256


def item_digest(item: Item) -> str:
    """16 hex digits over the question and the image file's bytes."""
    h = hashlib.sha256(item.question.encode("utf-8") + b"\0")
    with open(item.image_path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()[:16]


def blank_image(item: Item) -> Image.Image | Path:
    if item.blank_image_path is not None and Path(item.blank_image_path).is_file():
        return Path(item.blank_image_path)
    with Image.open(item.image_path) as img:
        return mean_colour_image(img.convert("RGB"))


class Runner:
    """Runs (item, pass) jobs on a loaded model through a :class:`ResultCache`.

    ``model_calls`` counts the ``vlm.answer`` calls made, ``cache_hits`` the jobs served
    from the cache; ``failures`` maps an item id to why it was dropped."""

    def __init__(self, vlm, cache: ResultCache, max_new_tokens: int = 16, progress: bool = True,
                 err: TextIO = sys.stderr, bundle: Optional[str] = None):
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
        self.vlm = vlm
        self.cache = cache
        self.max_new_tokens = max_new_tokens
        self.progress = progress
        self.err = err
        self.bundle_sha256 = bundle or bundle_digest(vlm)
        self.model_calls = 0
        self.cache_hits = 0
        self.model_seconds = 0.0
        self.failures: dict[str, str] = {}
        self._digests: dict[str, str] = {}
        # Can this model report attention maps?  (runtime.VLM: its manifest says; stand-ins: no manifest, no.)
        self.attention_available = bool(getattr(getattr(vlm, "manifest", None), "has_attention_outputs", False))

    # -- keys ------------------------------------------------------------------------------

    def _digest(self, item: Item) -> Optional[str]:
        d = self._digests.get(item.id)
        if d is None:
            try:
                d = self._digests[item.id] = item_digest(item)
            except OSError as e:
                self._fail(item, f"cannot read image {item.image_path}: {e}")
                return None
        return d

    def key(self, item: Item, p: Pass) -> Optional[str]:
        d = self._digest(item)
        return None if d is None else make_key(self.bundle_sha256[:16], item.id, d, p.name, self.max_new_tokens)

    def cached(self, item: Item, p: Pass) -> Optional[dict]:
        k = self.key(item, p)
        rec = None if k is None else self.cache.get(k)
        if rec is not None and p.influence and rec.get("influence") is None:
            return None
        if rec is not None and self._wants_alignment(item, p) and "alignment" not in rec:
            return None
        return rec

    def _wants_alignment(self, item: Item, p: Pass) -> bool:
        return p.alignment and self.attention_available and bool(parse_boxes(item.boxes))

    # -- running ----------------------------------------------------------------------------

    def run(self, jobs: Iterable[tuple[Item, Pass]], label: str = "model") -> dict[tuple[str, str], dict]:
        """Every job's record, keyed ``(item.id, pass.name)``; jobs of failed items are left out."""
        jobs = list(jobs)
        out: dict[tuple[str, str], dict] = {}
        todo: list[tuple[Item, Pass]] = []
        for item, p in jobs:
            if item.id in self.failures:
                continue
            rec = self.cached(item, p)
            if rec is not None:
                out[(item.id, p.name)] = rec
                self.cache_hits += 1
            elif item.id not in self.failures:
                todo.append((item, p))
        with _Progress(self.progress and bool(todo), self.err, f"{label} ({len(jobs) - len(todo)} cached)",
                       len(todo)) as bar:
            for item, p in todo:
                if item.id not in self.failures:
                    rec = self._call(item, p)
                    if rec is not None:
                        out[(item.id, p.name)] = rec
                bar.advance()
        return {k: v for k, v in out.items() if k[0] not in self.failures}

    def _call(self, item: Item, p: Pass) -> Optional[dict]:
        key = self.key(item, p)
        if key is None:
            return None
        try:
            image = blank_image(item) if p.blank else item.image_path
            attention = self._wants_alignment(item, p)
            extra = {"return_attention": True} if attention else {}
            t0 = time.perf_counter()
            self.model_calls += 1
            ans = self.vlm.answer(image, item.question, steering=p.steering, max_new_tokens=self.max_new_tokens,
                                  measure_image_influence=p.influence,
                                  blank_image=blank_image(item) if p.influence else None, **extra)
            seconds = time.perf_counter() - t0
        except (RuntimeInputError, OSError) as e:
            self._fail(item, f"{p.name}: {type(e).__name__}: {e}")
            return None
        self.model_seconds += seconds
        inf = ans.image_influence
        rec = {
            "key": key, "bundle": self.bundle_sha256[:16], "item": item.id, "digest": self._digests[item.id],
            "pass": p.name, "max_new_tokens": self.max_new_tokens,
            "text": ans.text, "token_ids": list(ans.token_ids), "confidence": ans.confidence, "scale": ans.alpha,
            "steering": ans.steering,
            "influence": None if inf is None else {
                "tv_distance": float(inf.tv_distance), "answer_changed": bool(inf.answer_changed),
                "blank_top_token": int(inf.blank_top_token), "blank_confidence": float(inf.blank_confidence)},
            "seconds": round(seconds, 6),
        }
        if attention:
            rec["alignment"] = alignment(ans.attention, item.boxes)
        self.cache.put(rec)
        return rec

    def _fail(self, item: Item, message: str) -> None:
        if item.id not in self.failures:
            self.failures[item.id] = message
            print(f"{item.source}: {item.id}: skipped: {message}", file=self.err)

    def stats(self) -> dict:
        return {"model_calls": self.model_calls, "cache_hits": self.cache_hits,
                "model_seconds": round(self.model_seconds, 3), "failed_items": len(self.failures)}


class _Progress:
    """A rich progress bar with ETA on ``err`` (a no-op when disabled or rich is missing)."""

    def __init__(self, enabled: bool, err: TextIO, description: str, total: int):
        self._bar = None
        if not enabled:
            return
        try:                           # optional: rich (the calibration extra); no bar without it
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)
        except ImportError:
            return
        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                             console=Console(file=err), transient=False)
        self._task = self._bar.add_task(description, total=total)

    def __enter__(self) -> "_Progress":
        if self._bar is not None:
            self._bar.start()
        return self

    def advance(self) -> None:
        if self._bar is not None:
            self._bar.advance(self._task)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()


def answers_for(results: dict[tuple[str, str], dict], items: Sequence[Item], pass_name: str) -> dict[str, str]:
    """item id -> generated text of one pass (items without a result are left out)."""
    return {it.id: results[(it.id, pass_name)]["text"] for it in items if (it.id, pass_name) in results}
