"""The fused decoder against the bundle's standard decoder, in ONNX Runtime, on the same inputs.

    standard decoder.onnx (checked against PyTorch at export) --+
                                                                +--> max |diff| per output kind
    fused decoder_fused_<dtype>.onnx ---------------------------+

Five calls, each graph chaining its own KV cache (errors compound as in real use): a prefill with
an image in it (alpha 1), three new rows steered by alpha 0.5 (several steered rows in one call),
one row with a random per-layer-per-head alpha, one with alpha 2, and an unsteered decode step.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from graphs.contracts import IMAGE_ATTENTION_SCALE, IMAGE_ATTENTION_SHARE, IMAGE_TOKEN_MASK, LAST_ROW_ATTENTION
from graphs.manifest import Manifest

from .errors import FusedParityError

# fused fp32 vs standard fp32: rounding only.  fp16 vs fp32: the fp16 export's own tolerance (README).
TOLERANCES = {"fp32": {"logits": 1e-4, "kv": 1e-4, "attention": 1e-5},
              "fp16": {"logits": 1e-1, "kv": 2e-2, "attention": 2e-3}}


def _session(path: Path, providers: list[str]) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=providers)


def _calls(manifest: Manifest, rng: np.random.Generator, embed: ort.InferenceSession):
    """(embeds [1, S, C] float32, scale [1, L, H]) for each call, and the image mask [1, total]."""
    d = manifest.decoder
    L, H = d.num_layers, d.num_attention_heads
    n_image = min(manifest.image_tokens_per_image, 40)
    prefill = n_image + 6
    sizes = [prefill, 3, 1, 1, 1]
    ids = rng.integers(3, min(d.vocab_size, 300), size=sum(sizes))
    embeds = embed.run(["inputs_embeds"], {"input_ids": ids[None].astype(np.int64)})[0].astype(np.float32)
    scale_of_text = float(np.abs(embeds).mean()) or 1.0
    embeds[0, 2: 2 + n_image] = rng.standard_normal((n_image, d.hidden_size)) * scale_of_text * 20
    mask = np.zeros((1, sum(sizes)), dtype=bool)
    mask[0, 2: 2 + n_image] = True
    per_head = rng.uniform(0.5, 2.0, size=(1, L, H)).astype(np.float32)
    scales = [np.full((1, L, H), a, np.float32) for a in (1.0, 0.5)] + [per_head] + \
             [np.full((1, L, H), a, np.float32) for a in (2.0, 1.0)]
    start = 0
    for size, scale in zip(sizes, scales):
        yield embeds[:, start: start + size], scale, mask
        start += size


def compare_decoders(folder: Path, manifest: Manifest, fused_file: str, dtype: str,
                     providers=("CPUExecutionProvider",), seed: int = 0) -> dict[str, float]:
    """{"logits", "kv", "attention"}: the largest differences over the five calls (kv relative to its magnitude)."""
    folder = Path(folder)
    providers = list(providers)
    standard = _session(folder / manifest.graphs["decoder"], providers)
    fused = _session(folder / fused_file, providers)
    embed = _session(folder / manifest.graphs["embed"], ["CPUExecutionProvider"])
    d = manifest.decoder
    floats = {"standard": np.float16 if manifest.dtype == "fp16" else np.float32,
              "fused": np.float16 if dtype == "fp16" else np.float32}
    empty = {k: np.zeros((1, d.num_key_value_heads, 0, d.head_dim), f) for k, f in floats.items()}
    caches = {k: [empty[k]] * (2 * d.num_layers) for k in floats}
    worst = {"logits": 0.0, "kv": 0.0, "attention": 0.0}
    past_names, present_names = manifest.past_names(), manifest.present_names()
    length = 0
    for embeds, scale, mask in _calls(manifest, np.random.default_rng(seed), embed):
        seq = embeds.shape[1]
        total = length + seq
        got = {}
        for kind, session in (("standard", standard), ("fused", fused)):
            feed = {"inputs_embeds": embeds.astype(floats[kind]), "attention_mask": np.ones((1, total), np.int64),
                    "position_ids": np.arange(length, total, dtype=np.int64)[None],
                    IMAGE_ATTENTION_SCALE: scale, IMAGE_TOKEN_MASK: mask[:, :total],
                    **dict(zip(past_names, caches[kind]))}
            out = session.run(["logits", *present_names, LAST_ROW_ATTENTION, IMAGE_ATTENTION_SHARE], feed)
            caches[kind] = out[1: 1 + len(present_names)]
            got[kind] = out
        a, b = got["standard"], got["fused"]
        worst["logits"] = max(worst["logits"], _diff(a[0], b[0]))
        for x, y in zip(a[1:-2], b[1:-2]):
            worst["kv"] = max(worst["kv"], _diff(x, y) / max(float(np.abs(x.astype(np.float32)).max()), 1e-6))
        worst["attention"] = max(worst["attention"], _diff(a[-2], b[-2]), _diff(a[-1], b[-1]))
        length = total
    return worst


def check_parity(worst: dict[str, float], dtype: str, atol: float | None = None) -> None:
    tolerance = dict(TOLERANCES[dtype])
    if atol is not None:
        tolerance["logits"] = atol
    over = [f"{k} {worst[k]:.2e} > {tolerance[k]:.0e}" for k in worst if worst[k] > tolerance[k]]
    if over:
        raise FusedParityError(f"the fused {dtype} decoder differs from the standard decoder: {', '.join(over)} "
                               f"(nothing was written into the bundle)")


def _diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).max())
