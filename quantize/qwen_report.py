"""The accuracy cost of a quantized Qwen bundle against its fp32 source, and its markdown form.

The same measures as LLaVA's report (``report.py``), through the Qwen loops (``runtime.qwen_vl``):

    fixed prompts   the first ``fixed`` synthetic items: the first answer token's logits [V] by the runtime's
                    schedule (vision, the prompt but its last token prefilled at alpha 1, the last token at
                    alpha 0.5, 1, 2 and a seeded per-layer-head alpha): max / mean |dlogits|, KL, top token
                    same, steering cosine
    benchmark       ``n_items`` synthetic items answered greedily by both bundles, unsteered and with AdaptVis
                    (the paper's defaults: Qwen bundles have no calibration): first token and all tokens the
                    same, how often AdaptVis chose another alpha
    decoders        the source's standard decoder against the quantized bundle's standard decoder, and against
                    its fused pair where it has one (the pair is what a CPU answer runs by default)

No tolerance is attached: LLaVA's (tolerances.py) are findings on its tiny fixtures, and the Qwen2.5-VL fixture's
sharpened attention moves further (docs/qwen-vl.md has the numbers).  Pure measurement: numpy and onnxruntime.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from graphs.qwen_manifest import QwenManifest
from runtime.images import load_image
from runtime.qwen_vl.answer import QwenModel
from runtime.qwen_vl.fused_decoder import QwenFusedModel
from runtime.qwen_vl.image import image_patches
from runtime.qwen_vl.merge import deepstack_rows, scatter_image_rows
from runtime.qwen_vl.positions import rope_index
from runtime.qwen_vl.vision_feeds import vision_feeds
from runtime.steering import AdaptVis, describe, scale_tensor

from .report import (ALPHAS, FIXED_PROMPTS, MAX_NEW_TOKENS, PER_HEAD, compare_answers, compare_logits, per_head_alpha,
                     provenance_lines, synthetic_items)

IMAGE_SIDE = 112        # the synthetic scenes' side in pixels: the tiny fixtures cap an image at 48 merged patches


def alpha_cases(model: QwenModel) -> dict[str, object]:
    return {**{f"{a:g}": a for a in ALPHAS}, PER_HEAD: per_head_alpha(model.layers, model.heads)}


def first_token_logits(model: QwenModel, image, question: str, alphas: dict[str, object]) -> dict[str, np.ndarray]:
    """{case: logits [V]} of the first answer token, as ``QwenModel.answer`` computes them (``last_token``)."""
    patches, grid = image_patches(load_image(image), model.image_spec)       # [N, CTPP], (t, h, w)
    vision = model.sessions["vision"].run(None, vision_feeds(patches, grid, model.vision_spec))
    ids = model.prompt_ids(question, grid)                                   # [n]
    n = len(ids)
    rows = (ids == model.tokens.image)[None]                                 # [1, n]
    embeds = scatter_image_rows(model._embed(ids[None]), rows, vision[0])    # [1, n, C]
    stack = deepstack_rows(rows, vision[1]) if len(vision) > 1 else None     # [D, 1, n, C]
    positions, _ = rope_index(ids[None], np.asarray([grid]), model.tokens, model.vision_spec.merge_size)  # [3, 1, n]

    def rows_of(lo, hi):
        return None if stack is None else stack[:, :, lo:hi]

    cache = model._empty(n)
    try:
        _, cache = model._step(embeds[:, :n - 1], positions[:, :, :n - 1], cache, model.ones, rows[:, :n - 1],
                               rows_of(0, n - 1))
        return {k: model._step(embeds[:, n - 1:], positions[:, :, n - 1:], cache,
                               scale_tensor(a, model.layers, model.heads), rows, rows_of(n - 1, n))[0]
                for k, a in alphas.items()}
    finally:
        model._release(cache)


class _ImagePaths:
    """A Qwen loop whose ``answer`` takes an image path too, as ``runtime.load``'s does (the benchmark's items)."""

    def __init__(self, model: QwenModel):
        self.model = model

    def answer(self, image, question: str, **options):
        return self.model.answer(load_image(image), question, **options)


def measure(source: Path, quantized: Path, n_items: int = 40, seed: int = 0, fixed: int = FIXED_PROMPTS,
            max_new_tokens: int = MAX_NEW_TOKENS, log=None) -> dict:
    """The accuracy cost of the Qwen bundle ``quantized`` against ``source`` (folders); a JSON-friendly dict."""
    log = log or (lambda m: None)
    t0 = time.perf_counter()
    src = QwenModel(source)
    candidates = {"standard": QwenModel(quantized)}
    if QwenManifest.read(quantized).fused_decoders:
        candidates["fused"] = QwenFusedModel(quantized)
    steering = AdaptVis()                     # the paper's defaults: a Qwen bundle carries no calibration yet
    decoders = {}
    with tempfile.TemporaryDirectory(prefix="quantize-report-") as tmp:
        items = synthetic_items(Path(tmp), n_items, seed, size=IMAGE_SIDE)
        prompts = [(item.image_path, item.question) for item in items[:fixed]]
        for name, q in candidates.items():
            log(f"report ({name} decoder): first-token logits on {len(prompts)} prompts x {len(ALPHAS) + 1} alphas, "
                f"{len(items)} items answered unsteered and with AdaptVis")
            logits = compare_logits(src, q, prompts, alpha_cases(src), first_token=first_token_logits)
            answers = compare_answers(_ImagePaths(src), _ImagePaths(q), items, steering, max_new_tokens)
            decoders[name] = {"fixed_prompts": logits,
                              "benchmark": {"dataset": "scenes.synthetic", "n_items": len(items), "seed": seed,
                                            "image_side": IMAGE_SIDE, "max_new_tokens": max_new_tokens,
                                            "steering": {"low": describe(steering.low), "high": describe(steering.high),
                                                         "threshold": steering.threshold,
                                                         "apply_to": steering.apply_to, "from": "paper default"},
                                            **answers}}
    default = decoders["fused" if "fused" in decoders else "standard"]     # what an answer on a CPU runs
    return {**default, "decoders": decoders, "seconds": round(time.perf_counter() - t0, 1)}


def _g(x: float) -> str:
    return f"{x:.3g}"


def markdown(manifest: QwenManifest, accuracy: dict) -> str:
    q = manifest.quantization
    d = manifest.decoder
    lines = [f"# Quantization report: {q['precision']} ({manifest.family})", "",
             *provenance_lines(q, manifest.source_model, d["num_layers"], d["hidden_size"])]
    lines += ["", "Against the source's standard decoder (first answer token's logits; greedy answers):", "",
              "| decoder | alpha | max abs dlogits | mean abs dlogits | max KL | top token same | steering cosine |",
              "|---|---|---|---|---|---|---|"]
    for name, r in accuracy["decoders"].items():
        f = r["fixed_prompts"]
        for k, v in [*f["per_alpha"].items(), ("all", f)]:
            cos = _g(v["min_steering_cosine"]) if "min_steering_cosine" in v else "-"
            lines.append(f"| {name} | {k} | {_g(v['max_abs_dlogits'])} | {_g(v['mean_abs_dlogits'])} | "
                         f"{_g(v['max_kl'])} | {100 * v['top_token_agreement']:.0f}% | {cos} |")
    lines += ["", "| decoder | answers | first token same | all tokens same |", "|---|---|---|---|"]
    for name, r in accuracy["decoders"].items():
        b = r["benchmark"]
        for kind in ("none", "adaptvis"):
            lines.append(f"| {name} | {'unsteered' if kind == 'none' else 'AdaptVis'} | "
                         f"{100 * b[kind]['first_token_agreement']:.0f}% | {100 * b[kind]['all_tokens_agreement']:.0f}% |")
    b = accuracy["benchmark"]
    lines += ["", f"{b['n_items']} synthetic items (seed {b['seed']}, {b['image_side']} px, {b['max_new_tokens']} new "
              f"tokens); AdaptVis chose another alpha on {b['alpha_changed']} of them. Measured in "
              f"{accuracy['seconds']} s.", ""]
    return "\n".join(lines)
