"""The accuracy cost of a quantized bundle, measured against its source bundle, and its markdown form.

    fixed prompts   the first ``fixed`` items of the synthetic benchmark, first answer token by the
                    runtime's schedule (prefill with alpha = 1, the last prompt token with alpha) at
                    alpha 0.5, 1, 2 and one seeded per-layer-per-head alpha: max and mean |dlogits|
                    (also relative to the source's largest |logit|), KL(p_source || p_quantized) of the
                    first-token distribution, and whether the top token is the same
    benchmark       ``scenes.synthetic`` (``n_items`` drawn with ``seed``), each item answered
                    unsteered and with AdaptVis (the source's calibration.json, else the paper's
                    default) by both bundles: greedy-token agreement, accuracy and its change, and how
                    often AdaptVis chose a different alpha (the confidence crossed the threshold)

Pure measurement: numpy and the runtime, never torch.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

import runtime
from evaluation.scoring import accuracy, score_item
from readers.datasets import load_dataset
from runtime.images import load_image
from runtime.bundle import Bundle
from runtime.model import calibrated_steering
from runtime.preprocess import pixel_values
from runtime.steering import AdaptVis, describe, scale_tensor
from scenes.synthetic import generate

from .tolerances import TOLERANCES

ALPHAS = (0.5, 1.0, 2.0)
PER_HEAD = "per-head"
FIXED_PROMPTS = 8
MAX_NEW_TOKENS = 8


def per_head_alpha(num_layers: int, num_heads: int, seed: int = 0) -> np.ndarray:
    """A fixed [L, H] alpha in [0.5, 2] (the per-layer-per-head case of the parity checks)."""
    return np.random.default_rng(seed).uniform(0.5, 2.0, (num_layers, num_heads)).astype(np.float32)


def alpha_cases(vlm) -> dict[str, object]:
    d = vlm.manifest.decoder
    return {**{f"{a:g}": a for a in ALPHAS}, PER_HEAD: per_head_alpha(d.num_layers, d.num_attention_heads)}


def first_token_logits(vlm, image, question: str, alphas: dict[str, object]) -> dict[str, np.ndarray]:
    """{case: logits [V] float32} of the first answer token, as ``VLM.answer`` computes them.

    The prompt up to its last token is prefilled once with alpha = 1; the last token is then run
    from that cache once per alpha, which is AdaptVis's rescaled step (``apply_to="last_token"``).
    """
    s = vlm.sessions
    d = vlm.manifest.decoder
    prompt = vlm.prompts.from_question(question)
    n = len(prompt.ids)
    features = s.image_features(pixel_values(load_image(image), vlm.manifest.preprocessing))  # [1, T, C]
    embeds = s.embeddings(prompt.ids)                                                          # [1, n, C]
    embeds[0, prompt.image_start: prompt.image_end] = features[0]
    mask = prompt.image_mask[None]                                                             # [1, n]
    ones = scale_tensor(1.0, d.num_layers, d.num_attention_heads)
    cache = s.new_cache(n)
    try:
        _, cache = s.step(embeds[:, : n - 1], cache, ones, mask)
        return {k: s.step(embeds[:, n - 1:], cache, scale_tensor(a, d.num_layers, d.num_attention_heads), mask)[0]
                for k, a in alphas.items()}
    finally:
        s.release(cache)


def log_softmax(x: np.ndarray) -> np.ndarray:
    z = x.astype(np.float64) - x.max()
    return z - np.log(np.exp(z).sum())


def kl(p_logits: np.ndarray, q_logits: np.ndarray) -> float:
    """KL(p || q) in nats between the softmaxes of two logit vectors."""
    lp, lq = log_softmax(p_logits), log_softmax(q_logits)
    return float(max(0.0, (np.exp(lp) * (lp - lq)).sum()))


def steering_cosine(source: dict[str, np.ndarray], quantized: dict[str, np.ndarray], case: str) -> float:
    """cos(q(alpha) - q(1), s(alpha) - s(1)): 1.0 when alpha moves both bundles' logits the same way."""
    es = source[case].astype(np.float64) - source["1"]
    eq = quantized[case].astype(np.float64) - quantized["1"]
    norm = np.linalg.norm(es) * np.linalg.norm(eq)
    return float(es @ eq / norm) if norm > 0 else 1.0


def compare_logits(source, quantized, prompts: list[tuple], alphas: dict[str, object],
                   first_token=first_token_logits) -> dict:
    """Per alpha case and over all: max / mean |dlogits|, relative max, KL, top-token agreement, steering cosine.
    ``first_token(model, image, question, alphas)``: {case: logits [V]} (LLaVA's by default; Qwen's in qwen_report)."""
    keys = ("max", "mean", "scale", "kl", "top", "cos")
    per: dict[str, dict[str, list]] = {k: {key: [] for key in keys} for k in alphas}
    for image, question in prompts:
        a = first_token(source, image, question, alphas)
        b = first_token(quantized, image, question, alphas)
        for k in alphas:
            diff = np.abs(a[k].astype(np.float64) - b[k])
            per[k]["max"].append(float(diff.max()))
            per[k]["mean"].append(float(diff.mean()))
            per[k]["scale"].append(float(np.abs(a[k]).max()))
            per[k]["kl"].append(kl(a[k], b[k]))
            per[k]["top"].append(int(a[k].argmax()) == int(b[k].argmax()))
            if k != "1" and "1" in alphas:
                per[k]["cos"].append(steering_cosine(a, b, k))

    def summary(v: dict[str, list]) -> dict:
        out = {"max_abs_dlogits": max(v["max"]), "mean_abs_dlogits": float(np.mean(v["mean"])),
               "max_rel_dlogits": max(m / max(s, 1e-12) for m, s in zip(v["max"], v["scale"])),
               "max_kl": max(v["kl"]), "mean_kl": float(np.mean(v["kl"])),
               "top_token_agreement": float(np.mean(v["top"]))}
        if v["cos"]:
            out["min_steering_cosine"] = min(v["cos"])
        return out

    merged = {key: [x for v in per.values() for x in v[key]] for key in keys}
    return {"n_prompts": len(prompts), "alphas": list(alphas), **summary(merged),
            "per_alpha": {k: summary(v) for k, v in per.items()}}


def compare_answers(source, quantized, items, steering: AdaptVis, max_new_tokens: int = MAX_NEW_TOKENS) -> dict:
    """Unsteered and AdaptVis answers of both bundles on benchmark items."""
    rows = {"none": [], "adaptvis": []}
    for item in items:
        for name, s in (("none", None), ("adaptvis", steering)):
            a = source.answer(item.image_path, item.question, steering=s, max_new_tokens=max_new_tokens)
            b = quantized.answer(item.image_path, item.question, steering=s, max_new_tokens=max_new_tokens)
            rows[name].append((item, a, b))
    out: dict = {}
    for name, r in rows.items():
        src_ok = [score_item(item, a.text) for item, a, _ in r]
        q_ok = [score_item(item, b.text) for item, _, b in r]
        out[name] = {
            "first_token_agreement": float(np.mean([a.token_ids[:1] == b.token_ids[:1] for _, a, b in r])),
            "all_tokens_agreement": float(np.mean([a.token_ids == b.token_ids for _, a, b in r])),
            "answer_changed_correctness": sum(x != y for x, y in zip(src_ok, q_ok)),
            "accuracy_source": accuracy(src_ok), "accuracy_quantized": accuracy(q_ok),
            "accuracy_delta": accuracy(q_ok) - accuracy(src_ok),
        }
    adapt = rows["adaptvis"]
    flips = [json.dumps(a.alpha) != json.dumps(b.alpha) for _, a, b in adapt]
    dconf = [abs(a.confidence - b.confidence) for _, a, b in adapt]
    out["alpha_changed"] = int(sum(flips))
    out["alpha_changed_fraction"] = float(np.mean(flips))
    out["confidence_abs_delta"] = {"max": float(max(dconf)), "mean": float(np.mean(dconf))}
    out["near_threshold"] = int(sum(abs(a.confidence - steering.threshold) <= max(dconf) for _, a, _ in adapt))
    return out


def synthetic_items(folder: Path, n_items: int, seed: int, size: int = 336) -> list:
    return list(load_dataset(generate(folder, n=n_items, seed=seed, size=size)).items)


def measure(source: str | Path | Bundle, quantized: str | Path | Bundle, n_items: int = 40, seed: int = 0, fixed: int = FIXED_PROMPTS,
            max_new_tokens: int = MAX_NEW_TOKENS, log=None) -> dict:
    """The accuracy cost of ``quantized`` against ``source`` (both bundles, or their folders); a JSON-friendly dict."""
    log = log or (lambda m: None)
    t0 = time.perf_counter()
    src = runtime.load(source, providers=["cpu"], decoder="standard")     # what was quantized
    q = runtime.load(quantized, providers=["cpu"])
    steering = calibrated_steering(src.bundle)     # the same AdaptVis for both: the source's calibration, else the paper's
    with tempfile.TemporaryDirectory(prefix="quantize-report-") as tmp:
        items = synthetic_items(Path(tmp), n_items, seed)
        prompts = [(item.image_path, item.question) for item in items[:fixed]]
        log(f"report: first-token logits on {len(prompts)} fixed prompts x {len(ALPHAS) + 1} alphas")
        logits = compare_logits(src, q, prompts, alpha_cases(src))
        log(f"report: {len(items)} synthetic items, unsteered and AdaptVis, both bundles")
        answers = compare_answers(src, q, items, steering, max_new_tokens)
    precision = _precision(q)
    if precision in TOLERANCES:
        t = TOLERANCES[precision]
        logits["tolerance"] = t.as_dict()
        logits["within_tolerance"] = t.holds(logits["max_abs_dlogits"], logits["max_kl"],
                                             logits.get("min_steering_cosine", 1.0))
    return {
        "fixed_prompts": logits,
        "benchmark": {"dataset": "scenes.synthetic", "n_items": len(items), "seed": seed,
                      "max_new_tokens": max_new_tokens,
                      "steering": {"low": describe(steering.low), "high": describe(steering.high),
                                   "threshold": steering.threshold, "apply_to": steering.apply_to,
                                   "from": "the source's calibration" if src.bundle.calibration is not None
                                   else "paper default"},
                      **answers},
        "seconds": round(time.perf_counter() - t0, 1),
    }


def _precision(vlm) -> str | None:
    q = vlm.manifest.quantization
    return q.get("precision") if q else None


# -- markdown ----------------------------------------------------------------------------------

def _g(x: float) -> str:
    return f"{x:.3g}"


def provenance_lines(q: dict, source_model: str, layers: int, hidden: int) -> list[str]:
    """A quantization record's settings, source and model, and what became of each graph (every family's report)."""
    settings = f"{q['precision']}, {q['method']}"
    if q.get("symmetric") is not None and not q["block_size"]:
        settings += f", {'symmetric' if q['symmetric'] else 'asymmetric'} weights"
    if q["block_size"]:
        settings += (f", block {q['block_size']}, {'symmetric' if q['symmetric'] else 'asymmetric'}, "
                     f"accuracy level {q['accuracy_level']}")
    lines = [
        f"- settings: {settings}; LM head {q['lm_head']}; tool `{q['tool']}` (onnxruntime {q['onnxruntime']})",
        f"- source: `{q['source_bundle']}` (manifest sha256 `{q['source_sha256'][:16]}...`)",
        f"- model: {source_model}; {layers} layers, hidden {hidden}",
        "",
    ]
    for name, stats in q["graphs"].items():
        if stats.get("copied"):
            lines.append(f"- {name}: copied unchanged")
        elif stats.get("not_converted"):
            lines.append(f"- {name}: not in this bundle: {stats['not_converted']}")
        elif "matmulnbits" in stats:
            skipped = "; ".join(f"`{k}`: {v}" for k, v in stats["skipped"].items()) or "none"
            lines.append(f"- {name}: {stats['matmulnbits']} of {stats['weight_matmuls']} weight MatMuls -> MatMulNBits "
                         f"({len(stats['k_padded'])} with K zero-padded to a whole block); kept: {skipped}")
        elif "matmulinteger" in stats:
            skipped = "; ".join(f"`{k}`: {v}" for k, v in stats["skipped"].items()) or "none"
            lines.append(f"- {name}: {stats['matmulinteger']} of {stats['weight_matmuls']} weight MatMuls -> "
                         f"MatMulInteger (weights {stats['weights']}; activations {stats['activations']}); "
                         f"kept: {skipped}")
        else:
            lines.append(f"- {name}: {stats['fp16_initializers']} weights fp16, {stats['fp32_initializers']} fp32; "
                         f"{stats['kept_fp32_nodes']} nodes kept fp32 (steering, mask, softmax, RMSNorm, rotary"
                         f"{', LM head' if stats.get('lm_head') == 'fp32' else ''})")
    return lines


def markdown(manifest, accuracy: dict) -> str:
    q = manifest.quantization
    f, b = accuracy["fixed_prompts"], accuracy["benchmark"]
    lines = [f"# Quantization report: {q['precision']}", "",
             *provenance_lines(q, manifest.source_model, manifest.decoder.num_layers, manifest.decoder.hidden_size)]
    lines += ["", f"## First-token logits on {f['n_prompts']} fixed prompts (against the source)", "",
              "| alpha | max abs dlogits | mean abs dlogits | max rel | max KL (nats) | mean KL | top token same "
              "| steering cosine |",
              "|---|---|---|---|---|---|---|---|"]
    for k, v in [*f["per_alpha"].items(), ("all", f)]:
        cos = _g(v["min_steering_cosine"]) if "min_steering_cosine" in v else "-"
        lines.append(f"| {k} | {_g(v['max_abs_dlogits'])} | {_g(v['mean_abs_dlogits'])} | {_g(v['max_rel_dlogits'])} | "
                     f"{_g(v['max_kl'])} | {_g(v['mean_kl'])} | {100 * v['top_token_agreement']:.0f}% | {cos} |")
    lines += ["", "max rel: max abs dlogits / the source's largest abs logit. Steering cosine: the smallest cosine "
              "between q(alpha) - q(1) and s(alpha) - s(1) (1 = alpha moves both bundles' logits the same way)."]
    if "tolerance" in f:
        t = f["tolerance"]
        lines += ["", f"The tolerance the tests hold on the tiny models for {q['precision']}: max abs dlogits <= "
                  f"{_g(t['max_abs_dlogits'])}, KL <= {_g(t['max_kl'])}, steering cosine >= "
                  f"{_g(t['min_steering_cosine'])}: {'within' if f['within_tolerance'] else 'NOT within'} it here "
                  f"(a finding on random 2-layer models, not a promise for this one)."]
    a = b["steering"]
    lines += ["", f"## Synthetic spatial benchmark ({b['n_items']} items, seed {b['seed']}, "
              f"{b['max_new_tokens']} new tokens)", "",
              f"AdaptVis: low {a['low']}, high {a['high']}, threshold {a['threshold']} ({a['from']}).", "",
              "| answers | first token same | all tokens same | accuracy source | accuracy quantized | change |",
              "|---|---|---|---|---|---|"]
    for name in ("none", "adaptvis"):
        r = b[name]
        lines.append(f"| {'unsteered' if name == 'none' else 'AdaptVis'} | {100 * r['first_token_agreement']:.0f}% | "
                     f"{100 * r['all_tokens_agreement']:.0f}% | {r['accuracy_source']:.1f}% | "
                     f"{r['accuracy_quantized']:.1f}% | {r['accuracy_delta']:+.1f} pts |")
    c = b["confidence_abs_delta"]
    lines += ["", f"AdaptVis chose a different alpha on {b['alpha_changed']} of {b['n_items']} items "
              f"({100 * b['alpha_changed_fraction']:.0f}%): the confidence moved by {_g(c['mean'])} on average "
              f"(max {_g(c['max'])}); {b['near_threshold']} items had a source confidence within that max of the "
              f"threshold.", "", f"Measured in {accuracy['seconds']} s.", ""]
    return "\n".join(lines)
