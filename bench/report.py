"""The result: targets checked, rich tables printed, JSON written."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rich.console import Console
from rich.table import Table

# the CPU speed and memory targets for the 1b checkpoint, fp32
ADAPTVIS_OVER_PLAIN_MAX = 1.05       # ours, at the shortest answer length
SPEEDUP_OVER_REFERENCE_MIN = 3.0     # reference AdaptVis latency / ours
ROOFLINE_FRACTION_MIN = 0.5          # decode, ours
PEAK_OVER_WEIGHTS_MAX = 1.3          # runtime peak RSS / bundle weight bytes
# the quantized-bundle targets for the 1b checkpoint, CPU: the int4 / int8 bundles against fp32 and the reference
INT4_DECODER_BYTES_MAX = 0.35        # int4 decoder bytes / fp32 decoder bytes
INT4_DECODE_SPEEDUP_MIN = 3.0        # int4 decode tok/s / fp32 decode tok/s
INT4_DECODE_SPEEDUP_PEER = 5.5       # ... to match llama.cpp q4_0 (32.5 tok/s against our fp32's ~5.9)
QUANTIZED_SPEEDUP_OVER_REFERENCE_MIN = 4.0   # reference AdaptVis / our int8-or-int4 AdaptVis, cold
INT4_ADAPTVIS_OVER_FP32_PLAIN_MAX = 0.69     # llama.cpp q4_0 plain answer / our fp32 plain answer
INT8_DYNAMIC_SIDES = ("ours_int8_dynamic", "ours_int8_dynamic_vision")
QUANTIZED_SIDES = ("ours_int8", "ours_int4", *INT8_DYNAMIC_SIDES)
# the fused decoder's targets: nodes a layer; on a CPU at least as fast as the standard decoder and the
# reference's AdaptVis >= 3x ours; on a GPU (1b, fp16) decode <= 3 ms a token, fp16 <= 0.6x fp32, >= 10x
FUSED_SIDES = ("ours_fused", "ours_fused_fp16", "ours_fused_int8", "ours_fused_int4")
FUSED_NODES_PER_LAYER_MAX = {"plain": 13, "steered": 30}
FUSED_SPEEDUP_OVER_REFERENCE_MIN = {"cpu": 4.0, "cuda": 10.0}
FUSED_INT4_SPEEDUP_OVER_REFERENCE_MIN = 5.0     # on a CPU: int4's fewer bytes a token
FUSED_FP16_DECODE_S_MAX = 3e-3
FUSED_FP16_OVER_FP32_MAX = 0.6


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
    out.update(quantized_targets(result))
    out.update(fused_targets(result))
    return out


def fused_targets(result: dict) -> dict:
    """The fused decoders' targets, for the fused variants that ran."""
    out, variants, ratios, measured = {}, result.get("variants", {}), result["ratios"], result["measured"]
    provider = result.get("provider", "cpu")
    n0 = str(min(result["new_tokens"]))
    for side in (s for s in FUSED_SIDES if s in variants):
        name = side[5:].replace("_", "-")
        for graph, most in FUSED_NODES_PER_LAYER_MAX.items():
            out[f"{name}_{graph}_nodes_per_layer"] = _check((variants[side].get("layer_nodes") or {}).get(graph), most,
                                                            "<=", f"nodes inside each layer of the {graph} graph")
        out[f"{name}_adaptvis_over_standard"] = _check(
            ratios[n0].get(f"{side}_over_ours_adaptvis", {}).get("median"), 1.0, "<=",
            f"{name} AdaptVis answer / the standard decoder's, cold, {n0} new tokens")
        out[f"{name}_adaptvis_over_plain"] = _check(
            ratios[n0].get(f"{side}_adaptvis_over_plain", {}).get("median"), ADAPTVIS_OVER_PLAIN_MAX, "<=",
            f"{name}: AdaptVis answer / plain answer, {n0} new tokens")
        for n, r in ratios.items():
            q = r.get(f"{side}_over_reference_adaptvis", {}).get("median")
            least = (FUSED_INT4_SPEEDUP_OVER_REFERENCE_MIN if side == "ours_fused_int4" and provider == "cpu"
                     else FUSED_SPEEDUP_OVER_REFERENCE_MIN[provider])
            out[f"{name}_speedup_over_reference_adaptvis_{n}"] = _check(
                q and 1 / q, least, ">=",
                f"reference AdaptVis / {name} AdaptVis on {provider}, {n} new tokens")
    if provider == "cuda" and "ours_fused_fp16" in variants:
        for n in map(str, result["new_tokens"]):
            fp16 = measured["ours_fused_fp16"]["plain"][n]
            out[f"fused-fp16_decode_s_per_token_{n}"] = _check(
                (fp16.get("decode_s_per_token") or {}).get("median"), FUSED_FP16_DECODE_S_MAX, "<=",
                f"fused fp16 decode, seconds a token, {n} new tokens")
            if "ours_fused" in variants:
                a = measured["ours_fused_fp16"]["adaptvis"][n]["total_s"]["median"]
                b = measured["ours_fused"]["adaptvis"][n]["total_s"]["median"]
                out[f"fused-fp16_over_fused-fp32_adaptvis_{n}"] = _check(
                    a / b if a and b else None, FUSED_FP16_OVER_FP32_MAX, "<=",
                    f"fused fp16 AdaptVis answer / fused fp32's (medians), {n} new tokens")
    return out


def quantized_targets(result: dict) -> dict:
    """The quantized-bundle targets, for the variants that ran (nothing when no quantized variant did)."""
    out, variants, ratios = {}, result.get("variants", {}), result["ratios"]
    n0 = str(min(result["new_tokens"]))
    if "ours_int4" in variants:
        out["int4_decoder_bytes_over_fp32"] = _check(variants["ours_int4"]["decoder_bytes_over_fp32"],
                                                     INT4_DECODER_BYTES_MAX, "<=", "decoder initializer bytes")
        for n, r in ratios.items():
            speed = r.get("ours_int4_decode_speedup_plain", {}).get("median")
            out[f"int4_decode_speedup_{n}"] = _check(speed, INT4_DECODE_SPEEDUP_MIN, ">=",
                                                     f"int4 / fp32 decode tok/s, plain, {n} new tokens")
            out[f"int4_decode_speedup_peer_{n}"] = _check(speed, INT4_DECODE_SPEEDUP_PEER, ">=",
                                                          f"the same against llama.cpp q4_0's 5.5x, {n} new tokens")
        out["int4_adaptvis_over_fp32_plain"] = _check(
            ratios[n0].get("ours_int4_adaptvis_over_ours_plain", {}).get("median"), INT4_ADAPTVIS_OVER_FP32_PLAIN_MAX,
            "<=", f"int4 AdaptVis answer / fp32 plain answer, cold, {n0} new tokens")
    for side in INT8_DYNAMIC_SIDES:     # the int4 bar (llama.cpp q4_0's answer), met or not by an int8 bundle
        if side in variants:
            out[f"{side[5:]}_adaptvis_over_fp32_plain"] = _check(
                ratios[n0].get(f"{side}_adaptvis_over_ours_plain", {}).get("median"),
                INT4_ADAPTVIS_OVER_FP32_PLAIN_MAX, "<=",
                f"{side[5:].replace('_', '-')} AdaptVis answer / fp32 plain answer, cold, {n0} new tokens")
    for n, r in ratios.items():
        found = {side: 1 / r[f"{side}_over_reference_adaptvis"]["median"] for side in QUANTIZED_SIDES
                 if r.get(f"{side}_over_reference_adaptvis", {}).get("median")}
        if found:
            side = max(found, key=found.get)
            out[f"quantized_speedup_over_reference_adaptvis_{n}"] = _check(
                found[side], QUANTIZED_SPEEDUP_OVER_REFERENCE_MIN, ">=",
                f"reference fp32 AdaptVis / our int8 or int4 AdaptVis (the fastest: {side[5:].replace('_', '-')}), "
                f"cold, {n} new tokens")
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
    if isinstance(o, np.generic):
        return o.item()
    return str(o)


def print_variants(console: Console, result: dict) -> None:
    """One row per runtime: our fp32 bundle, then each variant; every ratio against fp32 is per repeat."""
    measured, ratios, variants = result["measured"], result["ratios"], result["variants"]
    fp32_bytes = result["bundle"]["weight_bytes"]
    mem = result.get("memory") or {}
    for n in map(str, result["new_tokens"]):
        t = Table(title=f"{result['size']}: the bundles side by side, {n} new tokens, cold; seconds unless noted",
                  title_justify="left")
        for col in ("runtime", "nodes/layer", "decoder MB", "on disk GB", "peak RSS GB", "vision", "prefill", "decode tok/s",
                    "x fp32", "roofline", "plain", "AdaptVis", "ref AdaptVis / it", "it / fp32 plain",
                    "tokens = fp32"):
            t.add_column(col, justify="left" if col == "runtime" else "right")
        rows = [("ours fp32", "ours", fp32_bytes["per_graph"]["decoder"], result["bundle"].get("disk_bytes"),
                 mem.get("peak_bytes"), result["bundle"].get("decoder_nodes_per_layer"))]
        rows += [(v["name"], side, v["weight_bytes"]["per_graph"]["decoder"], v["disk_bytes"],
                  (v.get("memory") or {}).get("peak_bytes"), v.get("decoder_nodes_per_layer"))
                 for side, v in variants.items()]
        ref = ratios[n]
        for label, side, decoder, disk, peak, nodes in rows:
            plain, adapt = measured[side]["plain"][n], measured[side]["adaptvis"][n]
            if side == "ours":
                speed = f"{1 / ref['ours_over_reference_adaptvis']['median']:.2f}x" \
                    if ref.get("ours_over_reference_adaptvis", {}).get("median") else "-"
                over_plain, same, x = "1", "-", "1"
            else:
                q = ref.get(f"{side}_over_reference_adaptvis", {}).get("median")
                speed = f"{1 / q:.2f}x" if q else "-"
                over_plain = _fmt(ref.get(f"{side}_adaptvis_over_ours_plain"), digits=3)
                match = ref.get(f"{side}_tokens_match_fp32", {})
                same = "/".join("yes" if match.get(m) else "no" for m in ("plain", "adaptvis"))
                x = _fmt(ref.get(f"{side}_decode_speedup_plain"), digits=2)
            roof = result["roofline"]["fraction"].get(f"{side}_plain")
            t.add_row(label, "-" if nodes is None else f"{nodes:.1f}",
                      f"{decoder / 1e6:,.0f} ({decoder / fp32_bytes['per_graph']['decoder']:.2f}x)",
                      "-" if disk is None else f"{disk / 1e9:.2f}", "-" if peak is None else f"{peak / 1e9:.2f}",
                      _fmt(plain["vision_s"]), _fmt(plain["prefill_s"]), _fmt(plain["decode_tokens_per_s"], digits=1),
                      x, _fmt(roof, digits=2), _fmt(plain["total_s"]), _fmt(adapt["total_s"]), speed, over_plain, same)
        console.print(t)


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
            for side in (x for x in sides if m in measured[x]):
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
    if result.get("variants"):
        print_variants(console, result)
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
    t = Table(title="targets (CPU speed and memory, meant for the 1b checkpoint)", title_justify="left")
    for col in ("target", "value", "wanted", "met", "margin", "what"):
        t.add_column(col)
    for k, v in result["targets"].items():
        met = {True: "[green]yes[/]", False: "[red]no[/]", None: "-"}[v["met"]]
        value = "-" if v["value"] is None else f"{v['value']:.3f}"
        margin = "-" if v.get("margin") is None else f"{v['margin']:+.0%}"
        t.add_row(k, value, v["target"], met, margin, v["what"])
    console.print(t)
