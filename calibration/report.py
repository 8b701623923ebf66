"""The calibration's Markdown report (from its calibration.json document)."""
from __future__ import annotations

from typing import Mapping, Sequence

from evaluation.report import METRIC_NAMES, alpha_text, markdown_table, pct, problems_section
from readers.items import Problem

from .grid import GridResult, tie_key


def calibration_markdown(doc: dict, grid: GridResult, stats: Mapping, heatmap: str | None,
                         problems: Sequence[Problem] = (), failures: Mapping[str, str] = {}) -> str:
    a, ds, sp, se = doc["adaptvis"], doc["dataset"], doc["split"], doc["search"]
    m = doc["metrics"]
    sv_alpha = m["test"]["scalingvis"]["alpha"]
    lines = [f"# AdaptVis calibration: {ds['subset']}", "",
             f"Bundle sha256 `{doc['bundle_sha256'][:16]}...`, dataset `{ds['path']}` "
             f"({ds['n_used']} items used of {ds['n_loaded']} loaded), {doc['created']}.", "",
             "## Chosen settings (written to calibration.json)", ""]
    lines += markdown_table(["alpha_low", "alpha_high", "threshold", "round_confidence", "apply_to"],
                    [[alpha_text(a['alpha_low']), alpha_text(a['alpha_high']), f"{a['threshold']:.4g}",
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
                         pct(m[split]["baseline"][k]), pct(m[split]["scalingvis"][k]), pct(m[split]["adaptvis"][k])])
    lines += markdown_table(["split", "metric", "n", "baseline", f"ScalingVis ({sv_alpha:g})", "AdaptVis"], rows)
    lines += ["", f"AdaptVis sent {m['test']['adaptvis']['n_alpha_low']} of {m['test']['adaptvis']['n']} test items "
              f"to alpha_low.", "", "## ScalingVis on dev, per alpha", ""]
    by_alpha = m["dev"]["scalingvis_by_alpha"]
    lines += markdown_table(["alpha"] + list(by_alpha), [["accuracy"] + [pct(v) for v in by_alpha.values()]])
    lines += ["", "## Best threshold per (alpha_low, alpha_high) on dev", ""]
    best: dict[tuple, object] = {}
    for c in grid.cells:
        k = (c.alpha_low, c.alpha_high)
        if k not in best or tie_key(c, grid.reference_threshold) < tie_key(best[k], grid.reference_threshold):
            best[k] = c
    ranked = sorted(best.values(), key=lambda c: tie_key(c, grid.reference_threshold))
    lines += markdown_table(["alpha_low", "alpha_high", "threshold", "dev accuracy", "to alpha_low"],
                    [[f"{c.alpha_low:g}", f"{c.alpha_high:g}", f"{c.threshold:.4g}", pct(c.accuracy),
                      f"{c.n_low}/{c.n}"] for c in ranked])
    lines += ["", f"{se['n_cells']} cells searched ({len(se['alpha_low'])} x {len(se['alpha_high'])} alphas x "
              f"{se['n_thresholds']} thresholds; thresholds: {se['thresholds'] if isinstance(se['thresholds'], str) else 'given'}). "
              f"Ties: smallest alpha change, then the threshold nearest {se['tie_break_reference_threshold']}.",
              "", f"![dev accuracy over alpha_high x threshold]({heatmap})" if heatmap else
              "(No heatmap: matplotlib is not installed.)", "", "## Run", ""]
    lines += [f"- model calls: {stats.get('model_calls')}, served from the cache: {stats.get('cache_hits')}",
              f"- model time {stats.get('model_seconds', 0):.1f} s, wall time {stats.get('wall_seconds', 0):.1f} s",
              f"- cache: `{stats.get('cache')}`"]
    lines += problems_section(problems, failures)
    return "\n".join(lines) + "\n"
