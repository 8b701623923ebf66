"""python -m runtime answer --bundle DIR --image FILE "question" [--steering adaptvis|scalingvis|none] [--json]

Prints the answer, the steering, per-phase timings in milliseconds and the decoder graph that ran (``--json``:
the Answer's fields, with ``timings_ms`` and ``decoder``).  Warns on stderr when the answer repeats the
question, or is none of the options the question lists ("Answer with left, right, on or under.").
"""
from __future__ import annotations

import argparse
import json
import re
import sys

import runtime

from .decoders import DECODERS
from .errors import RuntimeInputError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m runtime", description="Answer questions about images.")
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("answer", help="answer one question about one image")
    a.add_argument("question")
    a.add_argument("--bundle", required=True, help="bundle folder written by `just export`")
    a.add_argument("--image", required=True, help="image file")
    a.add_argument("--steering", choices=["adaptvis", "scalingvis", "none"], default="adaptvis",
                   help="adaptvis: the bundle's calibration.json, else the paper's defaults (default)")
    a.add_argument("--alpha", type=float, default=1.2, help="ScalingVis alpha (default 1.2)")
    a.add_argument("--low", type=float, help="AdaptVis alpha_low (overrides the calibration)")
    a.add_argument("--high", type=float, help="AdaptVis alpha_high")
    a.add_argument("--threshold", type=float, help="AdaptVis confidence threshold")
    a.add_argument("--max-new-tokens", type=int, default=16)
    a.add_argument("--provider", action="append", help="cpu (default), cuda or tensorrt; repeat for a priority list")
    a.add_argument("--decoder", choices=DECODERS, default="auto",
                   help="auto (default): the bundle's fused decoder on cpu/cuda when it has one, else the standard one")
    a.add_argument("--influence", action="store_true", help="also measure how much the image changed the answer")
    a.add_argument("--json", action="store_true", help="print the Answer as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        vlm = runtime.load(args.bundle, providers=args.provider or ["cpu"], decoder=args.decoder)
        steering = _steering(args, vlm, runtime)
        ans = vlm.answer(args.image, args.question, steering=steering, max_new_tokens=args.max_new_tokens,
                         measure_image_influence=args.influence)
    except RuntimeInputError as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    warning = answer_warning(args.question, ans.text)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    decoder = vlm.sessions.decoder_choice
    if args.json:
        print(json.dumps(answer_json(ans, decoder), indent=2))
    else:
        print(format_answer(ans))
        print(f"decoder:    {decoder.file} ({decoder.flavour}, {decoder.dtype})")
    return 0


def answer_json(ans, decoder) -> dict:
    """The Answer's fields, its timings in milliseconds (``timings_ms``, as the text output gives them) and
    the decoder graph that ran."""
    d = ans.to_dict()
    d["timings_ms"] = {k: v * 1e3 for k, v in d.pop("timings").items()}
    d["decoder"] = {"file": decoder.file, "flavour": decoder.flavour, "dtype": decoder.dtype}
    return d


ECHO_RUN = 5            # words in a row shared with the question: an echo, not an answer ("left of the plate" is 4)
ECHO_WARNING = ("the answer repeats the question: the model did not take it as a question it knows. "
                "A model trained on one question form (the spatial model: 'Where is the A in relation to the B? "
                "Answer with left, right, on or under.') echoes others back.")
OFF_LIST_WARNING = ("the answer {answer!r} is none of the options the question lists ({options}): the model did not "
                    "answer in the form it was trained on (the spatial model's card: one of the four relation words, "
                    "for 'Where is the A in relation to the B? Answer with left, right, on or under.')")
# "Answer with left, right, on or under." / "Answer yes or no.": the options, at the end of the question.
_LISTED = re.compile(r"\banswer\s+(?:with\s+)?([a-z][a-z -]*(?:\s*,\s*[a-z][a-z -]*)*)\s*[.!?]?\s*$", re.IGNORECASE)


def answer_warning(question: str, answer: str) -> str | None:
    """Why ``answer`` is not an answer the model was trained to give, or None: it repeats the question, or
    it is not one of the options the question lists."""
    if echoes_question(question, answer):
        return ECHO_WARNING
    options = listed_options(question)
    if options and answer.strip().strip(".!").strip().lower() not in options:
        return OFF_LIST_WARNING.format(answer=answer, options=", ".join(options))
    return None


def listed_options(question: str) -> tuple[str, ...]:
    """The options an "Answer with a, b or c." ending lists (lower case), or () when it lists none."""
    m = _LISTED.search(question.strip())
    if not m:
        return ()
    options = tuple(o.strip().lower() for o in re.split(r"\s*,\s*(?:or\s+)?|\s+or\s+", m.group(1)) if o.strip())
    return options if len(options) >= 2 and all(len(o.split()) <= 3 for o in options) else ()


def echoes_question(question: str, answer: str) -> bool:
    """Whether ``answer`` repeats ``question``: ECHO_RUN words in a row of it (all of it when shorter)."""
    q, a = _words(question), _words(answer)
    run = min(ECHO_RUN, len(q))
    if run == 0 or len(a) < run:
        return False
    grams = {tuple(q[i: i + run]) for i in range(len(q) - run + 1)}
    return any(tuple(a[i: i + run]) in grams for i in range(len(a) - run + 1))


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _steering(args, vlm, runtime):
    if args.steering == "none":
        return None
    if args.steering == "scalingvis":
        return runtime.ScalingVis(args.alpha)
    base = vlm.default_steering
    return runtime.AdaptVis(low=base.low if args.low is None else args.low,
                            high=base.high if args.high is None else args.high,
                            threshold=base.threshold if args.threshold is None else args.threshold,
                            round_confidence=base.round_confidence, apply_to=base.apply_to)


def format_answer(ans) -> str:
    t = ans.timings
    conf = "n/a" if ans.confidence is None else f"{ans.confidence:.3f}"
    lines = [f"answer:     {ans.text!r}",
             f"steering:   {ans.steering}  alpha={ans.alpha}  confidence={conf}",
             f"timings ms: vision {t.vision * 1e3:.1f} | prefill {t.prefill * 1e3:.1f} | confidence step "
             f"{t.confidence_step * 1e3:.1f} | rescaled step {t.rescaled_step * 1e3:.1f} | decode {t.decode * 1e3:.1f} "
             f"({len(ans.token_ids)} tokens) | total {t.total * 1e3:.1f}"]
    if ans.image_influence is not None:
        i = ans.image_influence
        lines.append(f"image influence: TV distance {i.tv_distance:.3f}, first token changed without the image: "
                     f"{i.answer_changed}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
