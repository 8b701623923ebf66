"""The evaluation's Markdown report (from evaluation.json), and the tables both reports are made of."""
from __future__ import annotations

from typing import Mapping, Sequence

from readers.items import Problem

METRIC_NAMES = {
    "accuracy": "accuracy",
    "pair_accuracy": "pair accuracy",
    "set_accuracy": "set accuracy",
    "f1": "F1 (yes = positive)",
    "reference_f1": "F1 (reference code's)",
}


def pct(v) -> str:
    return "n/a" if v is None else f"{v:.1f}"


def alpha_text(v) -> str:
    """An alpha: a number, or a per-layer / per-head list."""
    return f"{v:g}" if isinstance(v, (int, float)) else f"per-layer {v}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def problems_section(problems: Sequence[Problem], failures: Mapping[str, str], limit: int = 20) -> list[str]:
    lines: list[str] = []
    if problems:
        lines += ["", f"Dataset problems ({len(problems)}; records skipped, or kept without an optional field such as the blank image):", ""]
        lines += [f"- `{p}`" for p in problems[:limit]]
        if len(problems) > limit:
            lines.append(f"- ... and {len(problems) - limit} more")
    if failures:
        lines += ["", f"Items dropped because a model call failed ({len(failures)}):", ""]
        lines += [f"- `{k}`: {v}" for k, v in list(failures.items())[:limit]]
    return lines


def _breakdown(split: Mapping | None, sv_alpha: float) -> list[str]:
    """The accuracy table per object kind and language prior (evaluation.json's ``breakdown``)."""
    if not split:
        return []
    blind = any("blind" in v for v in split.values())
    lines = ["", "### By object kind and language prior", "",
             "Accuracy (%) on coloured shapes vs everyday objects, and on everyday objects whose relation is "
             "the one a language prior expects (familiar: a cup on a table) vs not (unfamiliar: a cup under a "
             "table, a table on a cup)" + ("; blind: the baseline's answer about the blank image." if blind else "."),
             ""]
    rows = [[name, v["n"], pct(v["baseline"]), pct(v["scalingvis"]), pct(v["adaptvis"])]
            + ([pct(v.get("blind"))] if blind else []) for name, v in split.items()]
    lines += markdown_table(["items", "n", "baseline", f"ScalingVis ({sv_alpha:g})", "AdaptVis"] + (["blind"] if blind else []),
                    rows)
    return lines


ALIGNMENT_ROWS = {"all": "all", "adaptvis_correct": "AdaptVis right", "adaptvis_incorrect": "AdaptVis wrong",
                  "baseline_correct": "baseline right", "baseline_incorrect": "baseline wrong",
                  "alpha_low": "alpha_low applied", "alpha_high": "alpha_high applied"}


def _signed(a, b) -> str:
    return "n/a" if a is None or b is None else f"{b - a:+.1f}"


def _alignment(al: Mapping | None) -> list[str]:
    """The share of image attention inside the objects' boxes (evaluation.json's ``alignment``)."""
    if not al:
        return []
    lines = ["", "### Attention on the objects", ""]
    if not al.get("n"):
        return lines + [f"{al.get('n_with_boxes', 0)} items have boxes; {al.get('note', 'n/a')}."]
    groups = al["groups"]
    first = next(iter(groups.values()))
    keys = list(first["chance"])
    main = "union" if "union" in keys else keys[0]
    what = "A and B (their union)" if main == "union" else main
    lo, hi = al["middle_layers"]
    lines += [f"Share of the last prompt token's image attention (on the patch grid) inside the boxes of {what}, "
              f"in %, mean over layers {lo}..{hi - 1} of {al['num_layers']} (per layer in evaluation.json), for the "
              f"AdaptVis pass's alpha = 1 step and its step with the alpha it chose. Chance: the boxes' area "
              f"share, what attention spread evenly over the picture would put inside them. "
              f"{al['n']} of {al['n_with_boxes']} items with boxes.", ""]
    others = [k for k in keys if k != main]
    header = ["items", "n", "chance", "alpha = 1", "chosen alpha", "change"]
    for k in others:
        header += [f"{k}: chance", f"{k}: alpha = 1", f"{k}: chosen"]
    rows = []
    for g, v in groups.items():
        row = [ALIGNMENT_ROWS.get(g, g), v["n"], pct(v["chance"].get(main)), pct(v["alpha_1"].get(main)),
               pct(v["chosen_alpha"].get(main)), _signed(v["alpha_1"].get(main), v["chosen_alpha"].get(main))]
        for k in others:
            row += [pct(v["chance"].get(k)), pct(v["alpha_1"].get(k)), pct(v["chosen_alpha"].get(k))]
        rows.append(row)
    lines += markdown_table(header, rows)
    return lines


def evaluation_markdown(doc: dict, problems: Sequence[Problem] = (), failures: Mapping[str, str] = {}) -> str:
    subsets = doc["subsets"]
    lines = ["# Evaluation: baseline, ScalingVis, AdaptVis", "",
             f"Bundle `{doc['bundle']}` (sha256 `{doc['bundle_sha256'][:16]}...`), {doc['created']}. "
             f"Greedy answers, {doc['max_new_tokens']} new tokens, scoring `{doc['scoring']}`.", "",
             "## Accuracy (%)", ""]
    names = list(subsets)
    rows = []
    for method, label in (("baseline", "baseline"), ("scalingvis", "ScalingVis"), ("adaptvis", "AdaptVis")):
        rows.append([label] + [pct(subsets[s]["methods"][method]["accuracy"]) for s in names])
    lines += markdown_table(["method"] + [f"{s} (n={subsets[s]['n']})" for s in names], rows)
    for s in names:
        d = subsets[s]
        st = d["settings"]
        meth = d["methods"]
        lines += ["", f"## {s}", "",
                  f"ScalingVis alpha {st['scalingvis_alpha']:g} ({st['scalingvis_source']}); AdaptVis alpha_low "
                  f"{alpha_text(st['adaptvis']['alpha_low'])}, alpha_high {alpha_text(st['adaptvis']['alpha_high'])}, threshold "
                  f"{st['adaptvis']['threshold']:.4g} ({st['adaptvis_source']}).", ""]
        keys = [k for k in METRIC_NAMES if k in meth["baseline"]]
        lines += markdown_table(["metric", "baseline", f"ScalingVis ({st['scalingvis_alpha']:g})", "AdaptVis"],
                        [[METRIC_NAMES[k]] + [pct(meth[x][k]) for x in ("baseline", "scalingvis", "adaptvis")]
                         for k in keys])
        ad = meth["adaptvis"]
        lines += ["", f"AdaptVis sent {ad['n_alpha_low']} of {ad['n']} items to alpha_low "
                  f"(mean confidence {ad['mean_confidence']:.3f})."]
        lines += _breakdown(d.get("breakdown"), st["scalingvis_alpha"])
        lines += _alignment(d.get("alignment"))
        inf = d.get("influence")
        if inf:
            lines += ["", "### The image's influence (blind test)", "",
                      "First-token distributions (the runtime's `measure_image_influence`) and answers, "
                      "with the image vs with the item's blank image (else a mean-colour image).", ""]
            rows = []
            for split in ("all", "correct", "incorrect"):
                v = inf[split]
                rows.append([split, v["n"], "n/a" if v["mean_tv_distance"] is None else f"{v['mean_tv_distance']:.3f}",
                             pct(v["first_token_changed"]), pct(v["answer_option_changed"])])
            lines += markdown_table(["baseline answers", "n", "mean TV distance", "first token changed (%)",
                             "option in answer changed (%)"], rows)
            hist = d["histograms"]
            cats = hist["categories"]
            lines += ["", "Answers by the option word they contain (first in the text; `other`: none):", ""]
            rows = []
            for split in ("correct", "incorrect"):
                for cond in ("with image", "blank image"):
                    rows.append([split, cond] + [hist["counts"][split][cond].get(c, 0) for c in cats])
            lines += markdown_table(["baseline answers", "image"] + cats, rows)
            if d.get("histogram_png"):
                lines += ["", f"![answers with and without the image]({d['histogram_png']})"]
    st = doc.get("run", {})
    lines += ["", "## Run", "",
              f"- model calls: {st.get('model_calls')}, served from the cache: {st.get('cache_hits')}",
              f"- model time {st.get('model_seconds', 0):.1f} s, wall time {st.get('wall_seconds', 0):.1f} s",
              f"- cache: `{st.get('cache')}`"]
    lines += problems_section(problems, failures)
    return "\n".join(lines) + "\n"
