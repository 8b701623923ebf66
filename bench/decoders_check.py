"""python -m bench.decoders_check BUNDLE --out FILE.json [--providers cpu,cuda] [--tokens 32]

One question about one image, answered plain and with AdaptVis (both branches) by every decoder of
the bundle on every provider asked for; the tokens and confidences against the first combination
(the standard decoder on the first provider), written as JSON:

    {"answers": {"cpu/standard": {"plain": {...}, ...}, "cuda/fused-fp16": ...},
     "against": "cpu/standard", "same_tokens": {"cuda/fused": {"plain": true, ...}}, "max_confidence_diff": {...}}

Never imports torch.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import runtime
from graphs.manifest import Manifest

from . import ours

METHODS = {"plain": {"kind": "plain"},
           "adaptvis-low": {"kind": "adaptvis", "low": 0.5, "high": 1.5, "threshold": 1.0},
           "adaptvis-high": {"kind": "adaptvis", "low": 0.5, "high": 1.5, "threshold": 0.0}}


def check(bundle: Path, providers: list[str], tokens: int) -> dict:
    manifest = Manifest.read(bundle)
    decoders = ["standard", *(f"fused-{d}" for d in sorted(manifest.fused_decoders or {}))]
    image = ours.scene(0)
    answers = {}
    for provider in providers:
        for decoder in decoders:
            if provider == "cpu" and decoder == "fused-fp16":
                continue            # no fast fp16 MatMul on an x86 CPU
            key = f"{provider}/{decoder}"
            try:
                vlm = runtime.load(bundle, providers=[provider], decoder=decoder)
                answers[key] = {}
                for name, method in METHODS.items():
                    got = ours.answer(vlm, image, ours.QUESTION, method, tokens, cold=True)
                    answers[key][name] = {k: got[k] for k in ("token_ids", "confidence", "alpha", "total_s")}
                del vlm
            except Exception as e:      # recorded in the result and printed: this is a check, not the runtime
                answers[key] = {"error": f"{type(e).__name__}: {e}"}
    ran = {k: a for k, a in answers.items() if "error" not in a}
    first = next(iter(ran))
    same = {k: {m: a[m]["token_ids"] == ran[first][m]["token_ids"] for m in METHODS} for k, a in ran.items()}
    conf = {k: max(abs(a[m]["confidence"] - ran[first][m]["confidence"]) for m in METHODS
                   if a[m]["confidence"] is not None) for k, a in ran.items()}
    same.update({k: a["error"] for k, a in answers.items() if k not in ran})
    return {"bundle": str(bundle), "question": ours.QUESTION, "tokens": tokens, "against": first,
            "same_tokens": same, "max_confidence_diff": conf, "answers": answers}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.decoders_check")
    p.add_argument("bundle", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--providers", default="cpu", help="comma-separated: cpu,cuda")
    p.add_argument("--tokens", type=int, default=32)
    args = p.parse_args(argv)
    result = check(args.bundle, [x for x in args.providers.split(",") if x], args.tokens)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for k, v in result["same_tokens"].items():
        diff = result["max_confidence_diff"].get(k)
        print(f"{k:22s} tokens equal to {result['against']}: {v}" + ("" if diff is None else f"  max |dconfidence| {diff:.1e}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
