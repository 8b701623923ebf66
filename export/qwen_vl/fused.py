"""The Qwen fused decoder pair at export: built from the loaded model, checked twice, recorded in the manifest.

    fused.qwen_vl.build_qwen_fused(model) --> decoder_plain_fp32.onnx, decoder_steered_fp32.onnx, decoder_fused_fp32.onnx_data
    check 1  against the bundle's standard decoder.onnx (ONNX Runtime both), each chaining its own cache,
             on the parity image: prefill with the image rows (plain graph), three rows at alpha 0.5 and one
             at a per-layer-head alpha (steered, several rows and one), two decode steps (plain), one step at
             alpha 2 (steered, one row after a long cache); logits, K/V (relative) and the read-outs.
    check 2  against ``QwenReference`` (PyTorch) on the export parity's own cases (``parity.ALPHAS``: plain,
             0.5, 2, per-layer-head, 2 after the image): prefill in two calls, one decode step; logits, the
             cache after the step, the steered call's read-out.

Tolerance, LLaVA's fused rule (``fused/parity.py``): the export held decoder.onnx to the model's own fp32
rounding (``parity_tolerance``); a correct fused pair is held to the same limit against the same PyTorch
model (check 2), so the two ONNX graphs may differ by twice it (check 1).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from fused.graph import fused_files
from fused.qwen_vl import build_qwen_fused
from runtime.qwen_vl.answer import QwenModel
from runtime.qwen_vl.fused_decoder import QwenFusedModel
from runtime.qwen_vl.image import image_patches
from runtime.qwen_vl.merge import deepstack_rows, scatter_image_rows
from runtime.qwen_vl.positions import VisionTokens, decode_positions, rope_index
from runtime.qwen_vl.vision_feeds import vision_feeds

from ..errors import ParityError
from . import parity
from .bundle import parity_image

KINDS = {"logits": "decoder", "kv": "decoder.present_relative", "attention": "decoder.attention"}
TWO_GRAPHS = 2.0


def limits_from(tolerance: dict[str, float]) -> dict[str, dict[str, float]]:
    """{"standard": 2 x the export's limits, "reference": 1 x} by kind."""
    return {"standard": {k: TWO_GRAPHS * tolerance[key] for k, key in KINDS.items()},
            "reference": {k: tolerance[key] for k, key in KINDS.items()}}


def _standard_runner(model):
    """A ``QwenModel`` call that also returns the read-outs: (logits [V], cache, attention [1, L, T] or None)."""
    session = model.sessions["decoder"]
    names = [o.name for o in session.get_outputs()]

    def run(embeds, positions, cache, scale, image_mask, deepstack):
        feeds = {"inputs_embeds": embeds, "attention_mask": np.ones(image_mask.shape, np.int64),
                 "position_ids": np.ascontiguousarray(positions), "image_attention_scale": scale,
                 "image_token_mask": image_mask, **dict(zip(model.past_names, cache))}
        if deepstack is not None:
            feeds["deepstack_embeds"] = np.ascontiguousarray(deepstack)
        out = dict(zip(names, session.run(None, feeds)))
        return out["logits"][0], [out[n] for n in model.present_names], out["last_row_attention"]
    return run


def _fused_runner(model):
    def run(embeds, positions, cache, scale, image_mask, deepstack):
        logits, cache = model._step(embeds, positions, cache, scale, image_mask, deepstack)
        steered = not np.all(scale == 1.0)
        n_kv = len(model.present_names)
        return logits, cache, (model.last_outputs[1 + n_kv].numpy() if steered else None)
    return run


def _kv(cache) -> list[np.ndarray]:
    if isinstance(cache, list):
        return cache
    return list(cache.buffers.read_prefix(cache.length))


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max(initial=0.0) / max(1.0, float(np.abs(b).max(initial=0.0))))


def compare_with_standard(standard, fused, image, question: str, seed: int = 0) -> dict[str, float]:
    """``standard``: a ``QwenModel``; ``fused``: a ``QwenFusedModel`` on the same bundle.  Largest differences."""
    m = standard
    patches, grid = image_patches(image, m.image_spec)
    vision = m.sessions["vision"].run(None, vision_feeds(patches, grid, m.vision_spec))
    ids = m.prompt_ids(question, grid)
    n = len(ids)
    rows = (ids == m.tokens.image)[None]
    embeds = scatter_image_rows(m._embed(ids[None]), rows, vision[0])
    stack = deepstack_rows(rows, vision[1]) if len(vision) > 1 else None
    positions, delta = rope_index(ids[None], np.asarray([grid]), m.tokens, m.vision_spec.merge_size)
    L, H = m.layers, m.heads
    rng = np.random.default_rng(seed)
    ones = np.ones((1, L, H), np.float32)
    tokens = rng.integers(3, 300, size=3)
    mask = np.concatenate([rows, np.zeros((1, 3), bool)], axis=1)
    # (lo, hi or a token, scale): the calls an answer makes, and a steered single row after a long cache
    plan = [(0, n - 4, ones), (n - 4, n - 1, np.full((1, L, H), 0.5, np.float32)),
            (n - 1, n, rng.uniform(0.5, 2.0, (1, L, H)).astype(np.float32)),
            (int(tokens[0]), None, ones), (int(tokens[1]), None, ones), (int(tokens[2]), None, np.full((1, L, H), 2.0, np.float32))]
    runners = {"standard": _standard_runner(standard), "fused": _fused_runner(fused)}
    caches = {"standard": standard._empty(n + 3), "fused": fused._empty(n + 3)}
    worst = {"logits": 0.0, "kv": 0.0, "attention": 0.0}
    length = 0
    try:
        for lo, hi, scale in plan:
            got = {}
            for kind, run in runners.items():
                if hi is None:
                    e = m._embed(np.array([[lo]], np.int64))
                    p = decode_positions(delta, length)
                    ds = None if stack is None else np.zeros((stack.shape[0], 1, 1, stack.shape[-1]), np.float32)
                    im = mask[:, :length + 1]
                else:
                    e, p, im = embeds[:, lo:hi], positions[:, :, lo:hi], mask[:, :hi]
                    ds = None if stack is None else stack[:, :, lo:hi]
                logits, caches[kind], attention = run(e, p, caches[kind], scale, im, ds)
                got[kind] = (logits, attention)
            length += 1 if hi is None else hi - lo
            worst["logits"] = max(worst["logits"], float(np.abs(got["standard"][0] - got["fused"][0]).max()))
            if got["fused"][1] is not None:
                worst["attention"] = max(worst["attention"],
                                         float(np.abs(got["standard"][1] - got["fused"][1]).max()))
            for x, y in zip(_kv(caches["standard"]), _kv(caches["fused"])):
                worst["kv"] = max(worst["kv"], _rel(y, x))
    finally:
        fused._release(caches["fused"])
    return worst


def compare_with_reference(reference, fused, seed: int = 0) -> dict[str, float]:
    """The export parity's cases (``parity.ALPHAS``) through the fused pair against ``QwenReference``."""
    model = reference.model
    inputs = reference.inputs(parity_image(), parity.QUESTION)
    config = model.config
    ids = inputs["input_ids"].numpy()
    image_rows = ids == config.image_token_id
    with torch.no_grad():
        stock = model.model.visual(inputs["pixel_values"], inputs["image_grid_thw"])
    features, deepstack = (stock[0], torch.stack(list(stock[1])).numpy()) if isinstance(stock, tuple) else (stock, None)
    embed = fused.sessions["embed"]
    embeds = scatter_image_rows(embed.run(None, {"input_ids": ids})[0], image_rows, features.numpy())
    stack = deepstack_rows(image_rows, deepstack) if deepstack is not None else None
    positions, delta = rope_index(ids, inputs["image_grid_thw"].numpy(), VisionTokens.from_config(config.to_dict()),
                                  config.vision_config.spatial_merge_size)
    rng = np.random.default_rng(seed)
    run = _fused_runner(fused)
    worst = {"logits": 0.0, "kv": 0.0, "attention": 0.0}
    for label, alpha, rows in parity.ALPHAS:
        if isinstance(alpha, str):
            alpha = (rng.random((reference.layers, reference.heads)) * 1.5 + 0.5).astype(np.float32)
        want = parity._reference_run(reference, inputs, alpha, rows)
        first = ids.shape[1] - 1 if rows == "last_token" else int(np.flatnonzero(image_rows[0]).max()) + 1
        calls = parity._calls(embeds, positions, delta, image_rows, stack, first, alpha, want["token"], embed,
                              reference.layers, reference.heads)
        cache = fused._empty(ids.shape[1] + 1)
        try:
            out = []
            for feeds in calls:
                logits, cache, attention = run(feeds["inputs_embeds"].astype(np.float32), feeds["position_ids"], cache,
                                               feeds["image_attention_scale"], feeds["image_token_mask"],
                                               feeds.get("deepstack_embeds"))
                out.append((logits, attention))
            worst["logits"] = max(worst["logits"], float(np.abs(out[1][0] - want["prefill_logits"][0]).max()),
                                  float(np.abs(out[2][0] - want["step_logits"][0]).max()))
            if out[1][1] is not None:
                worst["attention"] = max(worst["attention"], float(np.abs(out[1][1] - want["attention"]).max()))
            mine = _kv(cache)
            for i, (k, v) in enumerate(want["cache"]):
                worst["kv"] = max(worst["kv"], _rel(mine[2 * i], k), _rel(mine[2 * i + 1], v))
        finally:
            fused._release(cache)
    return worst


def check(worst: dict[str, float], limits: dict[str, float], against: str) -> None:
    over = [f"{k} {worst[k]:.2e} > {limits[k]:.2e}" for k in worst if worst[k] > limits[k]]
    if over:
        raise ParityError(f"the fused Qwen decoder differs from {against}: {', '.join(over)}")


def fused_record(model, reference, folder: Path, tolerance: dict[str, float], question: str, image, log) -> dict:
    """Build the pair into ``folder``, run both checks (``ParityError`` if over), return the manifest record."""
    t = time.perf_counter()
    built = build_qwen_fused(model, folder, "fp32")
    files = fused_files("fp32")
    limits = limits_from(tolerance)
    fused = QwenFusedModel(folder, files=files)
    standard = QwenModel(folder)
    vs_standard = compare_with_standard(standard, fused, image, question)
    check(vs_standard, limits["standard"], "decoder.onnx")
    vs_reference = compare_with_reference(reference, fused)
    check(vs_reference, limits["reference"], "the PyTorch reference")
    log(f"fused pair ({built['nodes_per_layer']['plain']:.0f} / {built['nodes_per_layer']['steered']:.0f} nodes a "
        f"layer): vs decoder.onnx " + ", ".join(f"{k} {v:.2e}" for k, v in vs_standard.items())
        + "; vs reference " + ", ".join(f"{k} {v:.2e}" for k, v in vs_reference.items())
        + f" ({time.perf_counter() - t:.1f}s)")
    return {**files, "dtype": "fp32", "kv_layout": "shared past/present buffer", "rotary": built["rotary"],
            "parity": {"standard": vs_standard, "reference": vs_reference},
            "parity_tolerance": limits,
            "parity_rule": "vs the PyTorch reference: the export's own limit for decoder.onnx (the model's fp32 "
                           "rounding); vs decoder.onnx: 2 x it",
            "nodes": built["nodes"], "nodes_per_layer": built["nodes_per_layer"],
            "attention_op": built["attention_op"], "ops": built["ops"], "checked_against": "decoder.onnx",
            "providers": ["cpu"]}
