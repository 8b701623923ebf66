"""python -m bench [--size small|1b] [--repeat N] [--new-tokens 16,64]: our runtime vs the PyTorch reference."""
from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

import runtime
from graphs.manifest import Manifest

from . import artifacts, machine, memory, ours, quiet, report, roofline, variants
from .measured import Measured
from .stats import paired_ratio, summary

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = ("tiny", "small", "1b")
DEFAULT_REPEAT = {"tiny": 3, "small": 5, "1b": 2}     # small: ~2 min, 1b: ~14 min on 2 cores


def methods(args) -> dict[str, dict]:
    return {"plain": {"kind": "plain"},
            "scalingvis": {"kind": "scalingvis", "alpha": args.alpha},
            "adaptvis": {"kind": "adaptvis", "low": args.low, "high": args.high, "threshold": args.threshold}}


def parse(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--size", choices=SIZES, default="small")
    p.add_argument("--repeat", type=int, default=None, help="timed repeats of each measurement "
                   f"(default: {', '.join(f'{k} {v}' for k, v in DEFAULT_REPEAT.items())})")
    p.add_argument("--new-tokens", default="16,64", help="comma-separated answer lengths (default 16,64)")
    p.add_argument("--alpha", type=float, default=1.2, help="ScalingVis alpha (default 1.2)")
    p.add_argument("--low", type=float, default=0.5, help="AdaptVis alpha below the threshold (default 0.5)")
    p.add_argument("--high", type=float, default=1.5, help="AdaptVis alpha at or above it (default 1.5)")
    p.add_argument("--threshold", type=float, default=0.4, help="AdaptVis confidence threshold (default 0.4)")
    p.add_argument("--provider", choices=("cpu", "cuda"), default="cpu",
                   help="ONNX Runtime provider for ours; with cuda the reference runs on the GPU too")
    p.add_argument("--no-warm", action="store_true", help="skip the warm (image cached) answers of ours")
    p.add_argument("--no-reference", action="store_true", help="time our runtime only")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory worker")
    p.add_argument("--variants", default=variants.DEFAULT,
                   help="runtimes timed beside the fp32 bundle, methods plain and AdaptVis: quantized copies "
                        "(fp16, int8, int4, int4-level1: int4 with fp32 arithmetic, int8-dynamic: int8 weights and activations, "
                        "int8-dynamic-vision: the vision tower too; built once beside the bundle), return-attention (answers with "
                        "return_attention=True), no-attention-outputs (the decoder without them), fused, fused-fp16 (the "
                        "bundle's fused decoder, built into it once; ours runs the standard one), fused-int8, fused-int4 (the "
                        "quantized copy's fused pair); "
                        f"comma-separated or none (default {variants.DEFAULT}; fp16 and no-attention-outputs are opt-in)")
    p.add_argument("--out", type=Path, default=None, help="result file (default bench/results/<size>-<machine>-<date>.json)")
    args = p.parse_args(argv)
    args.repeat = args.repeat or DEFAULT_REPEAT[args.size]
    args.tokens = sorted({int(x) for x in args.new_tokens.split(",") if x.strip()})
    if args.repeat < 1 or not args.tokens or min(args.tokens) < 1:
        p.error("--repeat and --new-tokens must be positive")
    try:
        args.variant_names = variants.parse(args.variants)
    except ValueError as e:
        p.error(str(e))
    return args


def main(argv=None) -> int:
    args = parse(argv)
    console = Console() if sys.stdout.isatty() else Console(width=150)
    started = dt.datetime.now(dt.timezone.utc)
    info = machine.describe()
    console.print(f"[bold]bench[/] size={args.size} repeat={args.repeat} new tokens={args.tokens} "
                  f"on {info['cpu_model']} ({info['logical_cpus']} CPUs)")
    try:
        art = artifacts.prepare(args.size, log=lambda m: console.print(f"  {m}"))
    except artifacts.ArtifactsNotReady as e:
        console.print(f"[red]{e}[/]")
        return 2
    manifest = Manifest.read(art.bundle)
    try:
        extra = variants.prepare(art.bundle, args.variant_names, log=lambda m: console.print(f"  {m}"))
    except Exception as e:       # a quantization that fails is reported, not a traceback
        console.print(f"[red]could not prepare the variants {args.variant_names}: {type(e).__name__}: {e}[/]")
        return 2

    with console.status("measuring memory bandwidth (1 GiB copies) and weight bytes"):
        bandwidth = {"single_thread": roofline.memory_bandwidth(threads=1),
                     "all_threads": roofline.memory_bandwidth(threads=info["logical_cpus"] or 1),
                     "read_only_single_thread": roofline.read_bandwidth(threads=1),
                     "read_only_all_threads": roofline.read_bandwidth(threads=info["logical_cpus"] or 1)}
        weights = roofline.bundle_weight_bytes(art.bundle, manifest.graphs)
        for v in extra:
            v.weights = roofline.bundle_weight_bytes(v.bundle, variant_graphs(Manifest.read(v.bundle), v.decoder))
            v.disk_bytes = roofline.disk_bytes(v.bundle)
    peak = None
    if not args.no_memory:
        with console.status("peak memory: a child process loads the runtime and answers once (AdaptVis, cold)"):
            peak = memory.measure(art.bundle, max(args.tokens))
            for v in extra:
                if not v.shares_runtime:
                    v.peak = memory.measure(v.bundle, max(args.tokens), decoder=v.decoder)

    with console.status("loading our runtime"):
        t0 = time.perf_counter()
        vlm = runtime.load(art.bundle, providers=[args.provider], decoder="standard")
        ours_load = time.perf_counter() - t0
    for v in extra:
        with console.status(f"loading {v.name} ({v.bundle})"):
            t0 = time.perf_counter()
            v.vlm = vlm if v.shares_runtime else runtime.load(v.bundle, providers=[args.provider], decoder=v.decoder)
            v.load_s = time.perf_counter() - t0
    ref = ref_load = None
    if not args.no_reference:
        with console.status("loading the PyTorch reference"):
            from .reference import Reference          # heavy, optional: torch and transformers (the export extra)

            t0 = time.perf_counter()
            ref = Reference(art.checkpoint, device="cuda" if args.provider == "cuda" else "cpu")
            ref_load = time.perf_counter() - t0

    image, question = ours.scene(0), ours.QUESTION
    chosen = methods(args)
    samples = {side: {m: {n: [] for n in args.tokens} for m in chosen} for side in ("ours", "reference")}
    for v in extra:
        samples[v.side] = {m: {n: [] for n in args.tokens} for m in variants.METHODS}
    warm = {m: [] for m in chosen}
    warm_tokens = min(args.tokens)
    per_pair = (1 if ref is None else 2)
    total_steps = 2 + args.repeat * len(chosen) * (len(args.tokens) * per_pair + (0 if args.no_warm else 1))
    total_steps += args.repeat * len(args.tokens) * len(variants.METHODS) * len(extra) + len(extra)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    load_before = quiet.load_average()
    timed = quiet.CpuWatch().__enter__()
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("warm-up", total=total_steps)

        def step(description: str) -> None:
            progress.update(task, description=description)
            if not console.is_terminal:          # a log file: one line per measurement instead of a live bar
                done = int(progress.tasks[0].completed)
                console.print(f"[{done + 1}/{total_steps} {time.perf_counter() - t_start:7.0f}s] {description}",
                              highlight=False)

        t_start = time.perf_counter()
        # warm-up, untimed: first-run allocations and lazy initialisation on both sides
        step("warm-up: ours")
        ours.answer(vlm, image, question, chosen["plain"], 2)
        progress.advance(task)
        if ref is not None:
            step("warm-up: reference")
            ref.answer(image, question, chosen["plain"], 2)
        progress.advance(task)
        for v in extra:
            step(f"warm-up: {v.name}")
            ours.answer(v.vlm, image, question, chosen["plain"], 2, **v.answer_kwargs)
            progress.advance(task)
        for r in range(args.repeat):
            # methods side by side at each length, their order reversed every other repeat (cancels drift)
            order = list(chosen) if r % 2 == 0 else list(chosen)[::-1]
            for n in args.tokens:
                for name in order:
                    method = chosen[name]
                    step(f"repeat {r + 1}/{args.repeat} {n:>3} tok {name:<10}: ours")
                    with quiet.CpuWatch() as w:
                        mine = ours.answer(vlm, image, question, method, n, cold=True)
                    mine["foreign_cpu_s"] = w.foreign_s
                    samples["ours"][name][n].append(mine)
                    progress.advance(task)
                    for v in (extra if name in variants.METHODS else ()):
                        step(f"repeat {r + 1}/{args.repeat} {n:>3} tok {name:<10}: {v.name}")
                        with quiet.CpuWatch() as w:
                            got = ours.answer(v.vlm, image, question, method, n, cold=True, **v.answer_kwargs)
                        got["foreign_cpu_s"] = w.foreign_s
                        samples[v.side][name][n].append(got)
                        progress.advance(task)
                    if ref is not None:
                        step(f"repeat {r + 1}/{args.repeat} {n:>3} tok {name:<10}: reference")
                        # exactly as many tokens as ours made (ours stops at EOS, the reference is forced)
                        with quiet.CpuWatch() as w:
                            theirs = ref.answer(image, question, method, max(mine["tokens"], 1))
                        theirs["foreign_cpu_s"] = w.foreign_s
                        samples["reference"][name][n].append(theirs)
                        progress.advance(task)
                if n == warm_tokens and not args.no_warm:
                    # the cold answers above left this image's features and prefix in the cache
                    for name in order:
                        step(f"repeat {r + 1}/{args.repeat} {n:>3} tok {name:<10}: ours warm")
                        with quiet.CpuWatch() as w:
                            warm[name].append(ours.answer(vlm, image, question, chosen[name], n, cold=False))
                        warm[name][-1]["foreign_cpu_s"] = w.foreign_s
                        progress.advance(task)

    timed.__exit__(None, None, None)
    noise = {"load_average_before": load_before, "load_average_after": quiet.load_average(),
             "timed_wall_s": timed.wall_s, "foreign_cpu_s": timed.foreign_s,
             "foreign_cpu_fraction": None if timed.foreign_s is None else
             timed.foreign_s / (timed.wall_s * (info["logical_cpus"] or 1))}
    if noise["foreign_cpu_fraction"] and noise["foreign_cpu_fraction"] > 0.05:
        console.print(f"[yellow]warning: other processes used {noise['foreign_cpu_fraction']:.0%} of the CPUs "
                      f"while this ran; timings are slower than on a quiet machine[/]")
    result = build_result(Measured(args, info, art, manifest, bandwidth, weights, peak, samples, warm, warm_tokens,
                                   ours_load, ref_load, ref, started, vlm, noise, tuple(extra)).check())
    out = args.out or RESULTS / f"{args.size}-{machine.slug(info)}-{started:%Y-%m-%d}.json"
    report.write_json(result, out)
    report.print_tables(console, result)
    console.print(f"results written to [bold]{out}[/]")
    return 0


METRICS = ("total_s", "vision_s", "prefill_s", "ttft_s", "decode_tokens_per_s", "decode_s_per_token", "tokens",
           "foreign_cpu_s")


def _summaries(runs: list[dict]) -> dict:
    out = {k: summary([run.get(k) for run in runs]) for k in METRICS}
    if runs and "phases" in runs[0]:
        out["phases"] = {k: summary([run["phases"][k] for run in runs]) for k in runs[0]["phases"]}
    first = runs[0] if runs else {}
    out["confidence"] = first.get("confidence")
    out["alpha"] = first.get("alpha")
    out["token_ids"] = first.get("token_ids")
    return out


def build_result(run: Measured) -> dict:
    """The JSON result of one run (``bench/measured.py``: what was measured, checked)."""
    args, info, art, manifest, bandwidth, weights = run.args, run.info, run.art, run.manifest, run.bandwidth, run.weights
    peak, samples, warm, warm_tokens, noise, extra = run.peak, run.samples, run.warm, run.warm_tokens, run.noise, run.extra
    ours_load, ref_load, ref, started, vlm = run.ours_load, run.ref_load, run.ref, run.started, run.vlm
    sides = ["ours"] + ([] if ref is None else ["reference"]) + [v.side for v in extra]
    measured = {side: {m: {str(n): _summaries(samples[side][m][n]) for n in args.tokens}
                       for m in samples[side]} for side in sides}
    ratios = {}
    for n in args.tokens:
        key = str(n)
        r = {}
        for side in sides:
            plain = samples[side]["plain"][n]
            for m in (x for x in ("scalingvis", "adaptvis") if x in samples[side]):
                r[f"{side}_{m}_over_plain"] = paired_ratio([s["total_s"] for s in samples[side][m][n]],
                                                           [s["total_s"] for s in plain])
        # AdaptVis's extra work in ours is the confidence step: (plain + that step) / plain, per repeat,
        # and that step against one decode step; both immune to the run-to-run noise of whole answers
        adapt = samples["ours"]["adaptvis"][n]
        r["ours_adaptvis_extra_step_over_plain"] = paired_ratio(
            [p["total_s"] + a["phases"]["confidence_step_s"] for p, a in zip(samples["ours"]["plain"][n], adapt)],
            [p["total_s"] for p in samples["ours"]["plain"][n]])
        r["ours_adaptvis_extra_step_over_decode_step"] = paired_ratio(
            [a["phases"]["confidence_step_s"] for a in adapt], [a["decode_s_per_token"] or 0 for a in adapt])
        if ref is not None:
            for m in samples["ours"]:
                r[f"ours_over_reference_{m}"] = paired_ratio([s["total_s"] for s in samples["ours"][m][n]],
                                                             [s["total_s"] for s in samples["reference"][m][n]])
                r[f"ours_over_reference_{m}_ttft"] = paired_ratio([s["ttft_s"] for s in samples["ours"][m][n]],
                                                                  [s["ttft_s"] for s in samples["reference"][m][n]])
            if n == warm_tokens and any(warm.values()):
                # the cached-image case: ours warm (image features and prefix reused) vs the reference,
                # which has no cache and always recomputes everything
                for m in samples["ours"]:
                    r[f"ours_warm_over_reference_{m}"] = paired_ratio([s["total_s"] for s in warm[m]],
                                                                      [s["total_s"] for s in samples["reference"][m][n]])
            r["tokens_match"] = {m: samples["ours"][m][n][0]["token_ids"] == samples["reference"][m][n][0]["token_ids"]
                                 for m in samples["ours"]}
        r.update(variants_ratios(samples, extra, n, ref is not None))
        ratios[key] = r
    bw = max(bandwidth["single_thread"]["bytes_per_s"], bandwidth["all_threads"]["bytes_per_s"])
    bw_read = max(bandwidth["read_only_single_thread"]["bytes_per_s"], bandwidth["read_only_all_threads"]["bytes_per_s"])
    decoder_bytes = weights["per_graph"]["decoder"]
    side_bytes = {"ours": decoder_bytes, "reference": decoder_bytes,
                  **{v.side: v.weights["per_graph"]["decoder"] for v in extra}}
    roof = {"bandwidth_bytes_per_s": bw, "decoder_weight_bytes": decoder_bytes,
            "roofline_s_per_token": decoder_bytes / bw, "fraction": {},
            "read_only_bandwidth_bytes_per_s": bw_read, "read_only_roofline_s_per_token": decoder_bytes / bw_read,
            "fraction_read_only": {}}
    for side in sides:
        for m in samples[side]:
            spt = [s["decode_s_per_token"] for n in args.tokens for s in samples[side][m][n]
                   if s.get("decode_s_per_token")]
            roof["fraction"][f"{side}_{m}"] = summary([roofline.fraction(side_bytes[side], bw, x) for x in spt])
            roof["fraction_read_only"][f"{side}_{m}"] = summary([roofline.fraction(side_bytes[side], bw_read, x)
                                                                 for x in spt])
    memory_summary = None
    if peak is not None:
        memory_summary = dict(peak, bundle_weight_bytes=weights["total"],
                              peak_over_weights=peak["peak_bytes"] / weights["total"])
    adapt = measured["ours"]["adaptvis"][str(min(args.tokens))]
    branch = None
    if adapt["confidence"] is not None:
        branch = (f"confidence {adapt['confidence']:.4f} {'<' if adapt['confidence'] < args.threshold else '>='} "
                  f"threshold {args.threshold} -> alpha {adapt['alpha']}")
    result = {
        "schema": 1, "command": "python -m bench " + " ".join(_argv_echo(args)),
        "started_utc": started.isoformat(timespec="seconds"),
        "finished_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "size": args.size, "repeat": args.repeat, "new_tokens": args.tokens,
        "machine": info, "versions": machine.versions(),
        "threads": {"onnxruntime_intra_op": _ort_threads(vlm), "torch": None if ref is None else ref.threads()},
        "provider": args.provider,
        "bundle": {"folder": str(art.bundle), "checkpoint": str(art.checkpoint), "dtype": manifest.dtype,
                   "decoder_nodes_per_layer": nodes_per_layer(art.bundle / manifest.graphs["decoder"],
                                                              manifest.decoder.num_layers),
                   "built_now": art.built, "weight_bytes": weights, "disk_bytes": roofline.disk_bytes(art.bundle),
                   "decoder": vars(manifest.decoder), "image_tokens": manifest.image_tokens_per_image},
        "question": ours.QUESTION, "image": "bench.ours.scene(0), 640x480",
        "methods": methods(args), "adaptvis_branch": branch,
        "load_s": {"ours": ours_load, "reference": ref_load},
        "measured": measured,
        "warm": {"tokens": warm_tokens, "ours": {m: _summaries(v) for m, v in warm.items() if v}},
        "ratios": ratios, "roofline": roof, "bandwidth": bandwidth, "memory": memory_summary,
        "noise": noise,
        "variants": {v.side: variant_record(v, weights) for v in extra},
    }
    result["targets"] = report.targets(result)
    return result


def variants_ratios(samples, extra, n: int, with_reference: bool) -> dict:
    """Each variant against our fp32 answers (and the reference's AdaptVis), per repeat."""
    r = {}
    ours_runs = samples["ours"]
    for v in extra:
        mine = samples[v.side]
        for m in mine:
            r[f"{v.side}_over_ours_{m}"] = paired_ratio([s["total_s"] for s in mine[m][n]],
                                                        [s["total_s"] for s in ours_runs[m][n]])
        r[f"{v.side}_adaptvis_over_ours_plain"] = paired_ratio([s["total_s"] for s in mine["adaptvis"][n]],
                                                               [s["total_s"] for s in ours_runs["plain"][n]])
        r[f"{v.side}_decode_speedup_plain"] = paired_ratio([s["decode_s_per_token"] for s in ours_runs["plain"][n]],
                                                           [s["decode_s_per_token"] for s in mine["plain"][n]])
        if with_reference:
            r[f"{v.side}_over_reference_adaptvis"] = paired_ratio(
                [s["total_s"] for s in mine["adaptvis"][n]], [s["total_s"] for s in samples["reference"]["adaptvis"][n]])
        r[f"{v.side}_tokens_match_fp32"] = {m: mine[m][n][0]["token_ids"] == ours_runs[m][n][0]["token_ids"]
                                            for m in mine}
    return r


def variant_record(v, fp32_weights: dict) -> dict:
    q = Manifest.read(v.bundle).quantization
    decoder = v.weights["per_graph"]["decoder"]
    return {"name": v.name, "bundle": str(v.bundle), "built_now": v.built, "answer_kwargs": v.answer_kwargs,
            "quantization": None if not q else {k: q.get(k) for k in ("precision", "method", "bits", "block_size",
                                                                      "symmetric", "accuracy_level", "lm_head")},
            "weight_bytes": v.weights, "disk_bytes": v.disk_bytes,
            "decoder_bytes_over_fp32": decoder / fp32_weights["per_graph"]["decoder"],
            "load_s": v.load_s, "memory": getattr(v, "peak", None), "decoder": v.decoder,
            "layer_nodes": _layer_nodes(v),
            "decoder_nodes_per_layer": nodes_per_layer(v.bundle / v.vlm.sessions.decoder_choice.file,
                                                       v.vlm.manifest.decoder.num_layers)}


def variant_graphs(manifest, decoder: str) -> dict[str, str]:
    """The bundle's graph files, with the decoder the variant runs."""
    graphs = dict(manifest.graphs)
    if decoder.startswith("fused-"):
        graphs["decoder"] = manifest.fused_decoders[decoder.split("-", 1)[1]]["plain"]     # it names every weight
    return graphs


def _layer_nodes(v) -> float | None:
    """A fused pair's nodes inside each layer, {"plain", "steered"}, as its manifest record says (None for the others)."""
    choice = v.vlm.sessions.decoder_choice
    if choice.flavour != "fused":
        return None
    return v.vlm.manifest.fused_decoders[choice.dtype]["nodes_per_layer"]


def nodes_per_layer(path: Path, layers: int) -> float:
    """All the decoder graph's nodes (the once-a-call ones included) over its layers."""
    import onnx                        # optional: onnx (the export extra), loaded only to count nodes

    return len(onnx.load(str(path), load_external_data=False).graph.node) / layers


def _ort_threads(vlm):
    n = vlm.sessions.decoder.get_session_options().intra_op_num_threads
    return n or f"0 = onnxruntime default (physical cores: {machine.physical_cores()})"


def _argv_echo(args) -> list[str]:
    out = ["--size", args.size, "--repeat", str(args.repeat), "--new-tokens", ",".join(map(str, args.tokens)),
           "--provider", args.provider]
    if args.no_warm:
        out.append("--no-warm")
    if args.no_reference:
        out.append("--no-reference")
    if args.no_memory:
        out.append("--no-memory")
    out += ["--variants", ",".join(args.variant_names) or "none"]
    return out


if __name__ == "__main__":
    raise SystemExit(main())
