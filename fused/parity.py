"""The fused pair against the bundle's standard decoder, in ONNX Runtime, through the runtime's own decoders.

    standard decoder.onnx (checked against PyTorch at export) -- runtime.StandardDecoder --+
                                                                                          +--> max |diff| per kind
    fused pair (plain + steered, shared KV buffers) ----------- runtime.FusedDecoder -----+

Each decoder chains its own KV cache (errors compound as in real use), on the calls an answer makes:
a prefill with image keys in it (alpha 1: the plain graph), three new rows steered by alpha 0.5
(several steered rows in one call), one row at a random per-layer-per-head alpha, one at alpha 2,
one at alpha 1 with its attention asked for (the steered graph each), then two decode steps (the
plain graph on its fixed-shape binding).  Logits, the K/V written so far (relative to its largest
magnitude) and the attention read-outs are compared.

Tolerance (``tolerances``): the export held ``decoder.onnx`` to the model's own fp32 rounding
(manifest ``parity_tolerance``: the logits, the K/V, the attention); a correct fused graph is held
to the same limit against the same PyTorch model, so the two ONNX graphs may differ by twice it.
An fp16 pair against the fp32 standard decoder: the fp16 limits below.  ``--atol`` only widens.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from graphs.contracts import decoder_contract, embed_contract, plain_decoder_contract, steered_decoder_contract
from graphs.io_spec import GraphIO
from graphs.manifest import Manifest
from runtime.fused_decoder import FusedDecoder
from runtime.graph_io import DecoderNames
from runtime.providers import device_of
from runtime.sessions import steered_options
from runtime.standard_decoder import StandardDecoder

from .errors import FusedParityError

KINDS = {"logits": "decoder", "kv": "decoder.present_relative", "attention": "decoder.attention"}
TWO_GRAPHS = 2.0        # both graphs within the export's limit of the same PyTorch model
# no recorded limit (a bundle exported before they were recorded), and fp16 against fp32
FIXED = {"fp32": {"logits": 1e-4, "kv": 1e-4, "attention": 1e-5},
         "fp16": {"logits": 1e-1, "kv": 2e-2, "attention": 2e-3}}


def tolerances(manifest: Manifest, dtype: str, atol: float | None = None) -> tuple[dict[str, float], str]:
    """({"logits", "kv", "attention"} -> limit, the rule that set them)."""
    recorded = manifest.parity_tolerance or {}
    if dtype == "fp32" and manifest.dtype == "fp32" and all(k in recorded for k in KINDS.values()):
        limits = {kind: TWO_GRAPHS * recorded[key] for kind, key in KINDS.items()}
        rule = "2 x the export's own limit for decoder.onnx (the model's fp32 rounding)"
    else:
        limits = dict(FIXED[dtype])
        rule = f"{dtype}: fixed" + ("" if dtype == "fp16" else " (the bundle records no export limits)")
    if atol is not None:
        limits["logits"] = max(limits["logits"], atol)
        rule += f", logits widened to --atol {atol:g}"
    return limits, rule


def _session(path: Path, providers: list[str], steered: bool = False) -> ort.InferenceSession:
    options = steered_options(ort.SessionOptions()) if steered else ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=providers)


def _calls(manifest: Manifest, rng: np.random.Generator, embed, embed_names: tuple[str, str]):
    """(embeds [1, S, C] float32 or a token id, scale [1, L, H], attention?) per call, and the image mask."""
    d = manifest.decoder
    L, H = d.num_layers, d.num_attention_heads
    n_image = min(manifest.image_tokens_per_image, 40)
    sizes = [n_image + 6, 3, 1, 1, 1]
    ids = rng.integers(3, min(d.vocab_size, 300), size=sum(sizes) + 2)
    ids_name, embeds_name = embed_names
    embeds = embed.run([embeds_name], {ids_name: ids[None].astype(np.int64)})[0].astype(np.float32)   # [1, n, C]
    scale_of_text = float(np.abs(embeds).mean()) or 1.0
    embeds[0, 2: 2 + n_image] = rng.standard_normal((n_image, d.hidden_size)) * scale_of_text * 20
    mask = np.zeros((1, len(ids)), dtype=bool)
    mask[0, 2: 2 + n_image] = True
    ones = np.ones((1, L, H), np.float32)
    scales = [ones, np.full((1, L, H), 0.5, np.float32), rng.uniform(0.5, 2.0, size=(1, L, H)).astype(np.float32),
              np.full((1, L, H), 2.0, np.float32), ones]
    calls, start = [], 0
    for i, (size, scale) in enumerate(zip(sizes, scales)):
        calls.append((embeds[:, start: start + size], scale, i > 0))
        start += size
    calls += [(int(ids[start]), ones, False), (int(ids[start + 1]), ones, False)]      # two decode steps
    return calls, mask


def compare_decoders(folder: Path, manifest: Manifest, files: dict[str, str], dtype: str,
                     providers=("CPUExecutionProvider",), seed: int = 0) -> dict[str, float]:
    """{"logits", "kv", "attention"}: the largest differences over the calls (kv relative to its magnitude)."""
    folder, providers = Path(folder), list(providers)
    device = device_of(providers)
    d = manifest.decoder
    embed = _session(folder / manifest.graphs["embed"], providers)
    floats = {"fp16": np.float16, "fp32": np.float32}
    L = d.num_layers
    embed_names = tuple(manifest.graph_io(manifest.graphs["embed"], embed_contract(), manifest.dtype).name(role)
                        for role in ("input_ids", "inputs_embeds"))
    names = DecoderNames.of(manifest.graph_io(manifest.graphs["decoder"], decoder_contract(L, manifest.has_attention_outputs),
                                              manifest.dtype), L)
    standard = StandardDecoder(_session(folder / manifest.graphs["decoder"], providers),
                               lambda i: embed.run([embed_names[1]], {embed_names[0]: i[None]})[0],   # [n] -> [1, n, C]
                               names, floats[manifest.dtype], device, d.num_key_value_heads, d.head_dim)
    shape = {"layers": d.num_layers, "kv_heads": d.num_key_value_heads, "head_dim": d.head_dim,
             "hidden": d.hidden_size, "vocab": d.vocab_size}
    fused = FusedDecoder(_session(folder / files["plain"], providers), _session(folder / files["steered"], providers, steered=True),
                         embed, DecoderNames.of(GraphIO.from_contract(plain_decoder_contract(L), dtype), L),
                         DecoderNames.of(GraphIO.from_contract(steered_decoder_contract(L), dtype), L), embed_names,
                         floats[dtype], device, shape, d.max_position_embeddings)
    calls, mask = _calls(manifest, np.random.default_rng(seed), embed, embed_names)
    caches = {"standard": standard.new_cache(mask.shape[1]), "fused": fused.new_cache(mask.shape[1])}
    worst = {"logits": 0.0, "kv": 0.0, "attention": 0.0}
    try:
        for embeds, scale, attention in calls:
            got = {}
            for kind, runner in (("standard", standard), ("fused", fused)):
                if isinstance(embeds, int):
                    logits, caches[kind] = runner.decode(embeds, caches[kind], scale, mask)
                    rows = None
                else:
                    logits, caches[kind], rows = runner.step(embeds, caches[kind], scale, mask, attention)
                got[kind] = (logits, rows)
            (a, ra), (b, rb) = got["standard"], got["fused"]
            worst["logits"] = max(worst["logits"], _diff(a, b))
            if ra is not None:
                worst["attention"] = max(worst["attention"], _diff(ra.last_row, rb.last_row),
                                         _diff(ra.image_share, rb.image_share))
            length = caches["fused"].length
            mine = caches["fused"].buffers.read_prefix(length)
            for x, y in zip(caches["standard"].values, mine):
                x = x.numpy()
                worst["kv"] = max(worst["kv"], _diff(x, y) / max(float(np.abs(x.astype(np.float32)).max()), 1e-6))
    finally:
        fused.release(caches["fused"])
    return worst


def check_parity(worst: dict[str, float], limits: dict[str, float], dtype: str) -> None:
    over = [f"{k} {worst[k]:.2e} > {limits[k]:.2e}" for k in worst if worst[k] > limits[k]]
    if over:
        raise FusedParityError(f"the fused {dtype} decoder differs from the standard decoder: {', '.join(over)} "
                               f"(nothing was written into the bundle)")


def _diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).max())
