"""The result: targets checked, rich tables printed, JSON written."""
from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

# issue 4's targets (1b checkpoint, CPU, fp32)
ADAPTVIS_OVER_PLAIN_MAX = 1.05       # ours, at the shortest answer length
SPEEDUP_OVER_REFERENCE_MIN = 3.0     # reference AdaptVis latency / ours
ROOFLINE_FRACTION_MIN = 0.5          # decode, ours
PEAK_OVER_WEIGHTS_MAX = 1.3          # runtime peak RSS / bundle weight bytes


def targets(result: dict) -> dict:
    out = {}
    n0 = str(min(result["new_tokens"]))
    r = result["ratios"][n0]["ours_adaptvis_over_plain"]["median"]
    out["adaptvis_over_plain_ours"] = _check(r, ADAPTVIS_OVER_PLAIN_MAX, "<=", f"at {n0} new tokens")
    for n, ratios in result["ratios"].items():
        ratio = ratios.get("ours_over_reference_adaptvis", {}).get("median")
        speedup = 1 / ratio if ratio else None
        out[f"speedup_over_reference_adaptvis_{n}"] = _check(speedup, SPEEDUP_OVER_REFERENCE_MIN, ">=",
                                                             f"reference AdaptVis / ours AdaptVis at {n} new tokens")
    r = result["ratios"][n0].get("ours_adaptvis_extra_step_over_plain", {}).get("median")
    out["adaptvis_over_plain_ours_structural"] = _check(
        r, ADAPTVIS_OVER_PLAIN_MAX, "<=", f"(plain + AdaptVis's confidence step) / plain, per repeat, at {n0} new tokens")
    frac = result["roofline"]["fraction"].get("ours_plain", {}).get("median")
    out["decode_roofline_fraction"] = _check(frac, ROOFLINE_FRACTION_MIN, ">=", "ours, plain decode")
    mem = result.get("memory")
    out["peak_memory_over_weights"] = _check(mem and mem["peak_over_weights"], PEAK_OVER_WEIGHTS_MAX, "<=",
                                             "runtime-only process, peak RSS / bundle weight bytes")
    return out


def _check(value, target, op, what) -> dict:
    if value is None:
        return {"value": None, "target": f"{op} {target}", "met": None, "what": what}
    met = value <= target if op == "<=" else value >= target
    # by how much: positive = margin to spare, negative = missed by, relative to the target
    margin = (target - value) / target if op == "<=" else (value - target) / target
    return {"value": value, "target": f"{op} {target}", "met": met, "margin": margin, "what": what}


def write_json(result: dict, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=_plain) + "\n")


def _plain(o):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
    except ImportError:
        pass
    return str(o)


def _fmt(s: dict | None, scale: float = 1.0, digits: int = 2) -> str:
    if not s or s.get("median") is None:
        return "-"
    m, lo, hi = (s[k] * scale for k in ("median", "min", "max"))
    if s["n"] == 1 or abs(hi - lo) < 10 ** -digits:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} [dim]({lo:.{digits}f}–{hi:.{digits}f})[/]"


def print_tables(console: Console, result: dict) -> None:
    measured = result["measured"]
    sides = list(measured)
    for n in map(str, result["new_tokens"]):
        t = Table(title=f"{result['size']}: {n} new tokens, cold (image cache cleared), seconds unless noted; "
                        f"median (min–max) of {result['repeat']}", title_justify="left")
        for col in ("method", "side", "vision", "prefill", "TTFT", "decode tok/s", "latency", "tokens"):
            t.add_column(col, justify="left" if col in ("method", "side") else "right")
        for m in measured["ours"]:
            for side in sides:
                s = measured[side][m][n]
                t.add_row(m if side == "ours" else "", side, _fmt(s["vision_s"]), _fmt(s["prefill_s"]),
                          _fmt(s["ttft_s"]), _fmt(s["decode_tokens_per_s"], digits=1), _fmt(s["total_s"]),
                          _fmt(s["tokens"], digits=0))
        console.print(t)
    warm = result.get("warm", {}).get("ours")
    if warm:
        t = Table(title=f"ours, warm (image features and prefix cached), {result['warm']['tokens']} new tokens",
                  title_justify="left")
        for col in ("method", "prefill", "TTFT", "decode tok/s", "latency"):
            t.add_column(col, justify="left" if col == "method" else "right")
        for m, s in warm.items():
            t.add_row(m, _fmt(s["prefill_s"], digits=3), _fmt(s["ttft_s"], digits=3),
                      _fmt(s["decode_tokens_per_s"], digits=1), _fmt(s["total_s"]))
        console.print(t)
    t = Table(title="ratios of whole-answer latency (median of per-repeat ratios, min–max)", title_justify="left")
    t.add_column("ratio")
    for n in map(str, result["new_tokens"]):
        t.add_column(f"{n} tok", justify="right")
    keys = list(result["ratios"][str(result["new_tokens"][0])])
    for k in keys:
        if k == "tokens_match":
            continue
        t.add_row(k, *[_fmt(result["ratios"][n].get(k), digits=3) for n in map(str, result["new_tokens"])])
    console.print(t)
    roof = result["roofline"]
    t = Table(title=f"decode roofline: {roof['decoder_weight_bytes'] / 1e9:.3f} GB of decoder weights / "
                    f"{roof['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s copy bandwidth = "
                    f"{roof['roofline_s_per_token'] * 1e3:.1f} ms per token "
                    f"(read-only {roof['read_only_bandwidth_bytes_per_s'] / 1e9:.1f} GB/s: "
                    f"{roof['read_only_roofline_s_per_token'] * 1e3:.1f} ms)", title_justify="left")
    t.add_column("side, method")
    t.add_column("fraction of copy roofline", justify="right")
    t.add_column("fraction of read-only roofline", justify="right")
    for k, s in roof["fraction"].items():
        t.add_row(k, _fmt(s, digits=3), _fmt(roof["fraction_read_only"][k], digits=3))
    console.print(t)
    mem = result.get("memory")
    if mem:
        console.print(f"runtime peak RSS {mem['peak_bytes'] / 1e9:.3f} GB (after load {mem['after_load']['VmHWM'] / 1e9:.3f} GB) "
                      f"for {mem['bundle_weight_bytes'] / 1e9:.3f} GB of weights: {mem['peak_over_weights']:.2f}x")
    noise = result.get("noise") or {}
    if noise.get("foreign_cpu_fraction") is not None:
        console.print(f"other processes used {noise['foreign_cpu_fraction']:.1%} of the CPUs during the timed part "
                      f"(load average before {noise['load_average_before']}, after {noise['load_average_after']})")
    if result.get("adaptvis_branch"):
        console.print(f"AdaptVis branch: {result['adaptvis_branch']}")
    t = Table(title="targets (issue 4; meant for the 1b checkpoint)", title_justify="left")
    for col in ("target", "value", "wanted", "met", "margin", "what"):
        t.add_column(col)
    for k, v in result["targets"].items():
        met = {True: "[green]yes[/]", False: "[red]no[/]", None: "-"}[v["met"]]
        value = "-" if v["value"] is None else f"{v['value']:.3f}"
        margin = "-" if v.get("margin") is None else f"{v['margin']:+.0%}"
        t.add_row(k, value, v["target"], met, margin, v["what"])
    console.print(t)
