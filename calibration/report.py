"""Markdown reports of a calibration and of an evaluation (from their JSON documents)."""
from __future__ import annotations

from typing import Mapping, Sequence

from .grid import GridResult, _tie_key
from .items import Problem

METRIC_NAMES = {
    "accuracy": "accuracy",
    "pair_accuracy": "pair accuracy",
    "set_accuracy": "set accuracy",
    "f1": "F1 (yes = positive)",
    "reference_f1": "F1 (reference code's)",
}


def _pct(v) -> str:
    return "n/a" if v is None else f"{v:.1f}"


def _a(v) -> str:
    """An alpha: a number, or a per-layer / per-head list."""
    return f"{v:g}" if isinstance(v, (int, float)) else f"per-layer {v}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def _problems(problems: Sequence[Problem], failures: Mapping[str, str], limit: int = 20) -> list[str]:
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


def calibration_markdown(doc: dict, grid: GridResult, stats: Mapping, heatmap: str | None,
                         problems: Sequence[Problem] = (), failures: Mapping[str, str] = {}) -> str:
    a, ds, sp, se = doc["adaptvis"], doc["dataset"], doc["split"], doc["search"]
    m = doc["metrics"]
    sv_alpha = m["test"]["scalingvis"]["alpha"]
    lines = [f"# AdaptVis calibration: {ds['subset']}", "",
             f"Bundle sha256 `{doc['bundle_sha256'][:16]}...`, dataset `{ds['path']}` "
             f"({ds['n_used']} items used of {ds['n_loaded']} loaded), {doc['created']}.", "",
             "## Chosen settings (written to calibration.json)", ""]
    lines += _table(["alpha_low", "alpha_high", "threshold", "round_confidence", "apply_to"],
                    [[_a(a['alpha_low']), _a(a['alpha_high']), f"{a['threshold']:.4g}",
                      str(a["round_confidence"]).lower(), a["apply_to"]]])
    lines += ["", f"Chosen on a dev split of {sp['n_dev']} items (fraction {sp['dev_fraction']}, seed {sp['seed']}"
              f"{', groups kept whole' if sp['groups_kept_whole'] else ''}), scored on the other {sp['n_test']} items. "
              f"Answers: greedy, {se['max_new_tokens']} new tokens, scoring `{se['scoring']}`. "
              f"ScalingVis is the constant alpha best on dev ({sv_alpha:g}).", "",
              "## Accuracy (%)", ""]
    keys = [k for k in METRIC_NAMES if k in m["test"]["baseline"]]
    rows = []
    for split in ("dev", "test"):
        for k in keys:
            rows.append([split if k == keys[0] else "", METRIC_NAMES[k], m[split]["baseline"]["n"],
                         _pct(m[split]["baseline"][k]), _pct(m[split]["scalingvis"][k]), _pct(m[split]["adaptvis"][k])])
    lines += _table(["split", "metric", "n", "baseline", f"ScalingVis ({sv_alpha:g})", "AdaptVis"], rows)
    lines += ["", f"AdaptVis sent {m['test']['adaptvis']['n_alpha_low']} of {m['test']['adaptvis']['n']} test items "
              f"to alpha_low.", "", "## ScalingVis on dev, per alpha", ""]
    by_alpha = m["dev"]["scalingvis_by_alpha"]
    lines += _table(["alpha"] + list(by_alpha), [["accuracy"] + [_pct(v) for v in by_alpha.values()]])
    lines += ["", "## Best threshold per (alpha_low, alpha_high) on dev", ""]
    best: dict[tuple, object] = {}
    for c in grid.cells:
        k = (c.alpha_low, c.alpha_high)
        if k not in best or _tie_key(c, grid.reference_threshold) < _tie_key(best[k], grid.reference_threshold):
            best[k] = c
    ranked = sorted(best.values(), key=lambda c: _tie_key(c, grid.reference_threshold))
    lines += _table(["alpha_low", "alpha_high", "threshold", "dev accuracy", "to alpha_low"],
                    [[f"{c.alpha_low:g}", f"{c.alpha_high:g}", f"{c.threshold:.4g}", _pct(c.accuracy),
                      f"{c.n_low}/{c.n}"] for c in ranked])
    lines += ["", f"{se['n_cells']} cells searched ({len(se['alpha_low'])} x {len(se['alpha_high'])} alphas x "
              f"{se['n_thresholds']} thresholds; thresholds: {se['thresholds'] if isinstance(se['thresholds'], str) else 'given'}). "
              f"Ties: smallest alpha change, then the threshold nearest {se['tie_break_reference_threshold']}.",
              "", f"![dev accuracy over alpha_high x threshold]({heatmap})" if heatmap else
              "(No heatmap: matplotlib is not installed.)", "", "## Run", ""]
    lines += [f"- model calls: {stats.get('model_calls')}, served from the cache: {stats.get('cache_hits')}",
              f"- model time {stats.get('model_seconds', 0):.1f} s, wall time {stats.get('wall_seconds', 0):.1f} s",
              f"- cache: `{stats.get('cache')}`"]
    lines += _problems(problems, failures)
    return "\n".join(lines) + "\n"


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
    rows = [[name, v["n"], _pct(v["baseline"]), _pct(v["scalingvis"]), _pct(v["adaptvis"])]
            + ([_pct(v.get("blind"))] if blind else []) for name, v in split.items()]
    lines += _table(["items", "n", "baseline", f"ScalingVis ({sv_alpha:g})", "AdaptVis"] + (["blind"] if blind else []),
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
        row = [ALIGNMENT_ROWS.get(g, g), v["n"], _pct(v["chance"].get(main)), _pct(v["alpha_1"].get(main)),
               _pct(v["chosen_alpha"].get(main)), _signed(v["alpha_1"].get(main), v["chosen_alpha"].get(main))]
        for k in others:
            row += [_pct(v["chance"].get(k)), _pct(v["alpha_1"].get(k)), _pct(v["chosen_alpha"].get(k))]
        rows.append(row)
    lines += _table(header, rows)
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
        rows.append([label] + [_pct(subsets[s]["methods"][method]["accuracy"]) for s in names])
    lines += _table(["method"] + [f"{s} (n={subsets[s]['n']})" for s in names], rows)
    for s in names:
        d = subsets[s]
        st = d["settings"]
        meth = d["methods"]
        lines += ["", f"## {s}", "",
                  f"ScalingVis alpha {st['scalingvis_alpha']:g} ({st['scalingvis_source']}); AdaptVis alpha_low "
                  f"{_a(st['adaptvis']['alpha_low'])}, alpha_high {_a(st['adaptvis']['alpha_high'])}, threshold "
                  f"{st['adaptvis']['threshold']:.4g} ({st['adaptvis_source']}).", ""]
        keys = [k for k in METRIC_NAMES if k in meth["baseline"]]
        lines += _table(["metric", "baseline", f"ScalingVis ({st['scalingvis_alpha']:g})", "AdaptVis"],
                        [[METRIC_NAMES[k]] + [_pct(meth[x][k]) for x in ("baseline", "scalingvis", "adaptvis")]
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
                             _pct(v["first_token_changed"]), _pct(v["answer_option_changed"])])
            lines += _table(["baseline answers", "n", "mean TV distance", "first token changed (%)",
                             "option in answer changed (%)"], rows)
            hist = d["histograms"]
            cats = hist["categories"]
            lines += ["", "Answers by the option word they contain (first in the text; `other`: none):", ""]
            rows = []
            for split in ("correct", "incorrect"):
                for cond in ("with image", "blank image"):
                    rows.append([split, cond] + [hist["counts"][split][cond].get(c, 0) for c in cats])
            lines += _table(["baseline answers", "image"] + cats, rows)
            if d.get("histogram_png"):
                lines += ["", f"![answers with and without the image]({d['histogram_png']})"]
    st = doc.get("run", {})
    lines += ["", "## Run", "",
              f"- model calls: {st.get('model_calls')}, served from the cache: {st.get('cache_hits')}",
              f"- model time {st.get('model_seconds', 0):.1f} s, wall time {st.get('wall_seconds', 0):.1f} s",
              f"- cache: `{st.get('cache')}`"]
    lines += _problems(problems, failures)
    return "\n".join(lines) + "\n"
