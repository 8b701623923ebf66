"""The end-to-end demo on a built-in default: no download, no data.

    python -m export.demo            (just demo)

1. builds a tiny random LLaVA checkpoint locally (export.fixtures),
2. exports it into a bundle (export.export_llava, parity-checked),
3. draws a two-object scene procedurally (calibration.synthetic),
4. answers a spatial question with runtime.answer(): unsteered, then AdaptVis,
   and prints answer, confidence, alpha, timings and the image's influence.

The weights are random, so the words are meaningless; the machinery is real.
Point `just answer` at a bundle exported from a real checkpoint for real answers.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="tiny", help="fixture size (tiny, tiny-mha, small, 1b)")
    parser.add_argument("--workdir", type=Path, default=Path("build/demo"))
    args = parser.parse_args(argv)

    from calibration.synthetic import generate
    from export import export_llava
    from export.fixtures import build_checkpoint

    checkpoint = args.workdir / f"checkpoint-{args.size}"
    bundle = args.workdir / f"bundle-{args.size}"
    if not (checkpoint / "config.json").exists():
        print(f"[demo] building a random {args.size} LLaVA checkpoint in {checkpoint}")
        build_checkpoint(checkpoint, size=args.size)
    if not (bundle / "manifest.json").exists():
        export_llava(str(checkpoint), bundle)
    scenes = generate(args.workdir / "scenes", n=4, seed=0, size=336)
    item = json.loads(scenes.read_text())[0]
    a, b = item["objects"]["A"], item["objects"]["B"]
    image = scenes.parent / item["image_path"]
    question = f"Where is the {a} in relation to the {b}? Answer with left, right, on or under."

    import runtime
    from runtime.__main__ import format_answer

    vlm = runtime.load(bundle)
    print("(the second answer reuses the first one's image features and image prefix: vision 0.0)")
    print(f"\nimage:    {image}  (truth: {item['caption_options'][0]!r})\nquestion: {question}\n")
    for label, steering in (("plain", None), ("AdaptVis", vlm.default_steering)):
        ans = vlm.answer(image, question, steering=steering, measure_image_influence=True)
        print(f"-- {label}\n{format_answer(ans)}\n")
    print("(random weights: the words mean nothing; export a real checkpoint with `just export llava`)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
