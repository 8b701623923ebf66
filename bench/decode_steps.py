"""python -m bench.decode_steps BUNDLE [--provider cuda] [--prompt 591] [--steps 32] [--out FILE.json]

The decoder graphs alone, step by step (no vision, no embedding graph, no Python schedule): a
prefill of ``--prompt`` tokens (image keys in it), then ``--steps`` single-token steps with the KV
cache bound on the device, as the runtime binds it; the median seconds a step per graph.  Beside
each fused decoder, the same graph without its steering and attention-row nodes (the bias input
of the attention op removed, the attention outputs dropped, dead nodes pruned): what those nodes
cost a decode step.

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
import onnxruntime as ort

from graphs.contracts import ATTENTION_OUTPUTS, IMAGE_ATTENTION_SCALE, IMAGE_TOKEN_MASK
from graphs.manifest import Manifest

from .variants import prune_outputs

_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def unsteered_copy(folder: Path, file: str) -> tuple[Path, int]:
    """``file`` without the steering bias and attention outputs, saved beside it (its weights shared)."""
    model = onnx.load(str(folder / file), load_external_data=False)
    for node in model.graph.node:
        if node.op_type == "GroupQueryAttention" and len(node.input) > 10:
            node.input[10] = ""
        elif node.op_type == "MultiHeadAttention" and len(node.input) > 5:
            node.input[5] = ""
    prune_outputs(model, ATTENTION_OUTPUTS)
    path = folder / f".{Path(file).stem}_unsteered.onnx"
    onnx.save(model, str(path))
    return path, len(model.graph.node)


def time_steps(path: Path, manifest: Manifest, dtype: str, provider: str, prompt: int, steps: int) -> dict:
    d = manifest.decoder
    float_ = np.float16 if dtype == "fp16" else np.float32
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=[_PROVIDERS[provider]])
    inputs = {i.name for i in session.get_inputs()}
    device = "cuda" if provider == "cuda" else "cpu"
    rng = np.random.default_rng(0)
    mask = np.zeros((1, prompt + steps), dtype=bool)
    mask[0, 5: 5 + min(manifest.image_tokens_per_image, prompt - 6)] = True
    scale = np.ones((1, d.num_layers, d.num_attention_heads), np.float32)
    empty = ort.OrtValue.ortvalue_from_numpy(np.zeros((1, d.num_key_value_heads, 0, d.head_dim), float_), device, 0)
    cache = [empty] * (2 * d.num_layers)
    times, length = [], 0
    for seq in [prompt] + [1] * steps:
        total = length + seq
        binding = session.io_binding()
        binding.bind_cpu_input("inputs_embeds", (rng.standard_normal((1, seq, d.hidden_size)) * 0.02).astype(float_))
        binding.bind_cpu_input("attention_mask", np.ones((1, total), np.int64))
        binding.bind_cpu_input("position_ids", np.arange(length, total, dtype=np.int64)[None])
        if IMAGE_ATTENTION_SCALE in inputs:
            binding.bind_cpu_input(IMAGE_ATTENTION_SCALE, scale)
            binding.bind_cpu_input(IMAGE_TOKEN_MASK, np.ascontiguousarray(mask[:, :total]))
        for name, value in zip(manifest.past_names(), cache):
            binding.bind_ortvalue_input(name, value)
        binding.bind_output("logits", "cpu")
        for name in manifest.present_names():
            binding.bind_output(name, device, 0)
        t0 = time.perf_counter()
        session.run_with_iobinding(binding)
        out = binding.get_outputs()
        out[0].numpy()
        times.append(time.perf_counter() - t0)
        cache, length = out[1: 1 + len(cache)], total
    decode = times[2:]              # the first single-token step pays for lazy allocations
    return {"prefill_s": times[0], "decode_s_per_step_median": statistics.median(decode),
            "decode_s_per_step_min": min(decode), "steps": len(decode)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.decode_steps")
    p.add_argument("bundle", type=Path)
    p.add_argument("--provider", choices=sorted(_PROVIDERS), default="cpu")
    p.add_argument("--prompt", type=int, default=591)
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    folder = args.bundle
    manifest = Manifest.read(folder)
    graphs = [("standard", manifest.graphs["decoder"], manifest.dtype, None)]
    made = []
    for dtype, record in sorted((manifest.fused_decoders or {}).items()):
        graphs.append((f"fused-{dtype}", record["file"], dtype, None))
        path, nodes = unsteered_copy(folder, record["file"])
        made.append(path)
        graphs.append((f"fused-{dtype}-unsteered", path.name, dtype, nodes))
    result = {"bundle": str(folder), "provider": args.provider, "prompt": args.prompt, "graphs": {}}
    try:
        for name, file, dtype, nodes in graphs:
            if args.provider == "cpu" and dtype == "fp16":
                continue
            try:
                got = time_steps(folder / file, manifest, dtype, args.provider, args.prompt, args.steps)
            except Exception as e:      # recorded and printed: a measurement, not the runtime
                got = {"error": f"{type(e).__name__}: {e}"}
            got["nodes"] = nodes or len(onnx.load(str(folder / file), load_external_data=False).graph.node)
            got["nodes_per_layer"] = got["nodes"] / manifest.decoder.num_layers
            result["graphs"][name] = got
            print(f"{name:26s} " + ("  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                              for k, v in got.items())), flush=True)
    finally:
        for path in made:
            path.unlink(missing_ok=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
