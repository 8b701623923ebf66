"""python -m bench.decode_steps BUNDLE [BUNDLE ...] [--provider cuda] [--prompt 600] [--steps 64] [--repeat 3]
                               [--rss-steps 512] [--cuda-graph] [--out FILE.json]

The decoder alone, through the runtime's own decoders (no vision, no Python schedule around them):
for each bundle and each decoder it has (the standard ``decoder.onnx``; the fused pair), a prefill
of ``--prompt`` tokens with image keys in it, the steered last-token step (alpha 2) from the same
cache, then ``--steps`` decode steps (the hot loop).  Every decoder runs once per round, ``--repeat``
rounds; medians, and ratios against the first bundle's standard decoder paired round by round.  ``--rss-steps``: one more
run of that many decode steps per decoder, the resident memory read after every step (flat after
the first step: nothing allocated per token).  ``--cuda-graph`` (CUDA, fused pair): the decode step
captured and replayed; the same decoder without it is measured beside it.

Never imports torch.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import onnx

import runtime
from graphs.manifest import Manifest

from .machine import describe


def _rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _nodes_per_layer(folder: Path, file: str, layers: int) -> float:
    return len(onnx.load(str(folder / file), load_external_data=False).graph.node) / layers


class Probe:
    """One decoder's inputs for the runs: a ``prompt``-token prefill with image keys, alpha 2, the tokens to decode."""

    def __init__(self, vlm, prompt: int, steps: int, seed: int = 0):
        d = vlm.manifest.decoder
        rng = np.random.default_rng(seed)
        self.vlm, self.runner, self.prompt, self.steps = vlm, vlm.sessions.runner, prompt, steps
        self.embeds = (rng.standard_normal((1, prompt, d.hidden_size)) * 0.02).astype(np.float32)   # [1, P, C]
        self.image_mask = np.zeros((1, prompt + steps + 1), bool)
        self.image_mask[0, 5: 5 + min(vlm.manifest.image_tokens_per_image, prompt - 6)] = True
        self.ones = np.ones((1, d.num_layers, d.num_attention_heads), np.float32)
        self.tokens = rng.integers(3, min(d.vocab_size, 300), size=steps)

    def run(self) -> tuple[float, float, float]:
        """(prefill s, steered step s, median decode s a step) of one answer-shaped run."""
        runner = self.runner
        cache = runner.new_cache(self.prompt + self.steps + 1)
        try:
            t0 = time.perf_counter()
            _, cache, _ = runner.step(self.embeds[:, :-1], cache, self.ones, self.image_mask, False)
            t1 = time.perf_counter()
            _, cache, _ = runner.step(self.embeds[:, -1:], cache, self.ones * 2, self.image_mask, False)
            t2 = time.perf_counter()
            times = []
            for token in self.tokens:
                t = time.perf_counter()
                _, cache = runner.decode(int(token), cache, self.ones, self.image_mask)
                times.append(time.perf_counter() - t)
        finally:
            runner.release(cache)
        return t1 - t0, t2 - t1, statistics.median(times[1:])      # the first step pays for its bindings

    def resident(self) -> list[int]:
        """The resident memory after each of ``steps`` decode steps."""
        runner, rss = self.runner, []
        cache = runner.new_cache(self.prompt + self.steps + 1)
        try:
            _, cache, _ = runner.step(self.embeds, cache, self.ones, self.image_mask, False)
            for token in self.tokens:
                _, cache = runner.decode(int(token), cache, self.ones, self.image_mask)
                rss.append(_rss())
        finally:
            runner.release(cache)
        return rss


def decoders_of(manifest: Manifest) -> list[str]:
    fused = [f"fused-{d}" for d, r in sorted((manifest.fused_decoders or {}).items()) if "plain" in r]
    return ["standard", *fused]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.decode_steps")
    p.add_argument("bundles", type=Path, nargs="+")
    p.add_argument("--provider", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--prompt", type=int, default=600)
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--rss-steps", type=int, default=0)
    p.add_argument("--cuda-graph", action="store_true")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    result = {"machine": describe(), "provider": args.provider, "prompt": args.prompt, "steps": args.steps,
              "repeat": args.repeat, "rows": []}
    print(f"{'bundle':28s} {'decoder':16s} {'nodes/layer':>12s} {'prefill s':>10s} {'steered ms':>11s} "
          f"{'decode ms':>10s} {'prefill x':>10s} {'decode x':>9s} {'RSS growth MB':>14s}", flush=True)
    rows, probes = [], []
    for folder in args.bundles:
        manifest = Manifest.read(folder)
        variants = [(d, False) for d in decoders_of(manifest)]
        if args.cuda_graph:
            variants += [(d, True) for d in decoders_of(manifest) if d.startswith("fused")]
        for decoder, graph in variants:
            if args.provider == "cpu" and decoder == "fused-fp16":
                continue                # x86 CPUs have no fast fp16 MatMul
            vlm = runtime.load(folder, providers=[args.provider], decoder=decoder, cuda_graph=graph)
            choice = vlm.sessions.decoder_choice
            L = manifest.decoder.num_layers
            nodes = {"plain" if choice.steered_file else "decoder": _nodes_per_layer(folder, choice.file, L)}
            if choice.steered_file:
                nodes["steered"] = _nodes_per_layer(folder, choice.steered_file, L)
            rows.append({"bundle": str(folder), "quantization": (manifest.quantization or {}).get("precision"),
                         "accuracy_level": (manifest.quantization or {}).get("accuracy_level"),
                         "decoder": decoder + (" +cuda graph" if graph else ""), "nodes_per_layer": nodes,
                         "runs": []})
            probes.append(Probe(vlm, args.prompt, args.steps))
    # every decoder once per round, the rounds repeated: the machine's drift lands on all of them alike
    for _ in range(args.repeat):
        for row, probe in zip(rows, probes):
            row["runs"].append(probe.run())
    base = rows[0]
    for row, probe in zip(rows, probes):
        prefill, steered, decode = zip(*row["runs"])
        row.update(prefill_s=statistics.median(prefill), steered_step_s=statistics.median(steered),
                   decode_s_per_step=statistics.median(decode),
                   prefill_vs_first_standard=statistics.median(a / b for a, b in zip(prefill, next(zip(*base["runs"])))),
                   decode_vs_first_standard=statistics.median(a / b for a, b in zip(decode, list(zip(*base["runs"]))[2])))
        if args.rss_steps:
            rss = Probe(probe.vlm, args.prompt, args.rss_steps).resident()
            row.update(rss_after_first_step_mb=rss[0] / 2**20, rss_growth_after_first_step_mb=(max(rss) - rss[0]) / 2**20,
                       rss_steps=args.rss_steps)
        result["rows"].append(row)
        print(f"{Path(row['bundle']).name:28s} {row['decoder']:16s} "
              f"{'/'.join(f'{v:.1f}' for v in row['nodes_per_layer'].values()):>12s} {row['prefill_s']:10.3f} "
              f"{1e3 * row['steered_step_s']:11.1f} {1e3 * row['decode_s_per_step']:10.2f} "
              f"{row['prefill_vs_first_standard']:10.2f} {row['decode_vs_first_standard']:9.2f} "
              f"{row.get('rss_growth_after_first_step_mb', float('nan')):14.1f}", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
