"""Our runtime, timed: one `VLM.answer()` cold (image cache cleared first) or warm (image cached).

Never imports torch (it runs inside the memory worker too).
"""
from __future__ import annotations

import time

import numpy as np

QUESTION = "Where is the mug in relation to the plate?"


def scene(seed: int = 0, height: int = 480, width: int = 640) -> np.ndarray:
    """An HxWx3 uint8 image of smooth colour blobs (natural-ish, not white noise); same seed, same image."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    img = np.zeros((height, width, 3))
    for c in range(3):
        for _ in range(3):
            cx, cy, r = rng.random(3)
            img[..., c] += np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (0.05 + 0.2 * r))
    return (img / img.max() * 255).astype(np.uint8)


def steering(method: dict):
    """A method dict -> the runtime's steering object (None for plain)."""
    import runtime                     # bench.memory reads its baseline RSS after importing this module, before the runtime

    if method["kind"] == "plain":
        return None
    if method["kind"] == "scalingvis":
        return runtime.ScalingVis(method["alpha"])
    return runtime.AdaptVis(method["low"], method["high"], method["threshold"])


def answer(vlm, image, question: str, method: dict, tokens: int, cold: bool = True, **answer_kwargs) -> dict:
    """One timed answer; ``cold`` clears the image cache first (vision and image prefix recomputed).
    ``answer_kwargs`` go to ``vlm.answer`` (e.g. ``return_attention=True``)."""
    if cold:
        vlm.clear_cache()
    t0 = time.perf_counter()
    ans = vlm.answer(image, question, steering=steering(method), max_new_tokens=tokens, **answer_kwargs)
    total = time.perf_counter() - t0
    t = ans.timings
    n = len(ans.token_ids)
    ttft = total - t.decode
    prefill = t.prefill + t.confidence_step + t.rescaled_step
    return {"total_s": total, "vision_s": t.vision, "prefill_s": prefill, "ttft_s": ttft,
            "preprocess_s": ttft - t.vision - prefill, "decode_s": t.decode,
            "decode_tokens_per_s": (n - 1) / t.decode if n > 1 and t.decode > 0 else None,
            "decode_s_per_token": t.decode / (n - 1) if n > 1 else None,
            "tokens": n, "token_ids": ans.token_ids, "confidence": ans.confidence, "alpha": ans.alpha,
            "phases": {"vision_s": t.vision, "prefill_s": t.prefill, "confidence_step_s": t.confidence_step,
                       "rescaled_step_s": t.rescaled_step, "decode_s": t.decode}}
