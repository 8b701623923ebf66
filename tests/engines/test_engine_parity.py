"""Engines built here with TensorRT, run by the runtime, against ONNX Runtime on CPU.

Runs only where TensorRT's Python bindings, a CUDA GPU and onnxruntime-gpu's TensorRT provider are
all present; elsewhere every test is skipped with the reason (pytest -ra prints it).  Nothing here
stands in for TensorRT: each test builds real engines with `engines.builder` and loads them through
`runtime.load(providers=["tensorrt", "cuda"])`.

- fp32 engines: |Δlogits| <= 1e-3 against the CPU session on the same steps (prefill with an empty
  cache, the question after the image prefix, cached decode steps; alpha 0.5, 1, 2 and per-head).
- fp16 engines (from an fp16 export): the same greedy tokens as ONNX Runtime CPU on that bundle.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import onnxruntime as ort
import pytest

trt = pytest.importorskip("tensorrt", reason="TensorRT's Python bindings are not installed: the engine build and "
                                             "parity tests need TensorRT 10.x and an NVIDIA GPU")

import runtime  # noqa: E402
from engines.builder import build_bundle_engines  # noqa: E402
from runtime.engine_layout import read_record  # noqa: E402
from runtime.engine_target import TargetUnavailable, local_target  # noqa: E402
from tests.conftest import random_image  # noqa: E402


def _unavailable() -> str | None:
    try:
        local_target()
    except TargetUnavailable as e:
        return str(e)
    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        return f"onnxruntime {ort.__version__} has no TensorRT provider (install onnxruntime-gpu)"
    return None


pytestmark = pytest.mark.skipif(_unavailable() is not None, reason=f"{_unavailable()}")

MAX_CONTEXT = 64
QUESTIONS = ("Where is the mug in relation to the plate?", "What is left of the cup?")


@pytest.fixture(scope="module")
def built(tmp_path_factory, bundle_dir, checkpoint_dir):
    """(bundle with fp32 engines, bundle with fp16 engines) per checkpoint, built once."""
    from export import export_llava
    made = {}

    def get(size: str, precision: str):
        if (size, precision) not in made:
            out = tmp_path_factory.mktemp(f"engines-{size}-{precision}") / "bundle"
            if precision == "fp32":
                shutil.copytree(bundle_dir(size), out)
            else:
                export_llava(str(checkpoint_dir(size)), out, dtype="fp16", log=lambda m: None)
            build_bundle_engines(out, max_context=MAX_CONTEXT, log=print, show_progress=False)
            made[size, precision] = out
        return made[size, precision]
    return get


def test_build_records_tensorrt_gpu_profiles_time_and_sizes(size, built):
    bundle = built(size, "fp32")
    target = local_target()
    folder = bundle / "engines" / target.folder
    record = read_record(folder)
    assert record["tensorrt"] == target.tensorrt and record["compute_capability"] == target.compute_capability
    assert record["max_context"] == MAX_CONTEXT and record["precision"] == "fp32" and record["strongly_typed"]
    for graph in ("vision", "embed", "decoder"):
        entry = record["engines"][graph]
        assert (folder / entry["engine"]).stat().st_size == entry["bytes"] > 0
        assert entry["build_seconds"] > 0 and len(entry["profiles"]) == 1
    assert (folder / "timing.cache").stat().st_size > 0
    print(json.dumps({g: (e["bytes"], e["build_seconds"]) for g, e in record["engines"].items()}))


def test_rebuild_reuses_the_timing_cache(built, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(built("tiny", "fp32"), bundle)
    folder = build_bundle_engines(bundle, max_context=MAX_CONTEXT, log=print, show_progress=False)
    assert read_record(folder)["timing_cache_reused"]


def _steps(vlm, image, question):
    """The runtime's own schedule, step by step: (name, logits) for the image prefix, the question and
    the last token at several alphas, then cached decode steps."""
    s, d = vlm.sessions, vlm.manifest.decoder
    prompt = vlm.prompts.from_question(question)
    from runtime.preprocess import pixel_values
    from runtime.images import load_image
    from runtime.steering import scale_tensor
    features = s.image_features(pixel_values(load_image(image), vlm.manifest.preprocessing))
    n = len(prompt.ids)
    embeds = s.embeddings(prompt.ids)
    embeds[0, prompt.image_start: prompt.image_end] = features[0]
    mask = np.zeros((1, n + 8), dtype=bool)
    mask[0, prompt.image_start: prompt.image_end] = True
    ones = scale_tensor(1.0, d.num_layers, d.num_attention_heads)
    out = [("vision", features[0].astype(np.float32))]
    logits, prefix = s.step(embeds[:, : prompt.image_end], s.new_cache(len(prompt.ids)), ones, mask)
    out.append(("prefix", logits))
    logits, cache = s.step(embeds[:, prompt.image_end: n - 1], prefix, ones, mask)
    out.append(("question", logits))
    rng = np.random.default_rng(0)
    for alpha in (0.5, 1.0, 2.0, rng.uniform(0.5, 2.0, (d.num_layers, d.num_attention_heads))):
        logits, after = s.step(embeds[:, n - 1:], cache, scale_tensor(alpha, d.num_layers, d.num_attention_heads), mask)
        out.append((f"last token, alpha {np.mean(alpha):.2f}", logits))
    for t in range(3):
        token = int(np.argmax(logits))
        logits, after = s.step(s.embeddings(np.array([token], dtype=np.int64)), after, ones, mask)
        out.append((f"decode {t}", logits))
    return out


def test_fp32_engines_match_onnxruntime_cpu(size, built):
    bundle = built(size, "fp32")
    engine = runtime.load(bundle, providers=["tensorrt", "cuda"])
    assert engine.sessions.engines is not None and engine.sessions.max_context == MAX_CONTEXT
    cpu = runtime.load(bundle, providers=["cpu"])
    worst = 0.0
    for i, question in enumerate(QUESTIONS):
        for (name, a), (_, b) in zip(_steps(engine, random_image(i), question), _steps(cpu, random_image(i), question)):
            diff = float(np.abs(a.astype(np.float64) - b).max())
            worst = max(worst, diff)
            assert diff <= 1e-3, f"{size} {name}: |Δ| {diff:.2e}"
    print(f"{size}: fp32 engine vs ONNX Runtime CPU, max |Δlogits| {worst:.2e}")
    for i, question in enumerate(QUESTIONS):
        for steering in (None, runtime.ScalingVis(0.5), runtime.AdaptVis(0.5, 2.0, 0.2)):
            a = engine.answer(random_image(i), question, steering=steering, max_new_tokens=8)
            b = cpu.answer(random_image(i), question, steering=steering, max_new_tokens=8)
            assert a.token_ids == b.token_ids and a.alpha == b.alpha


def test_fp16_engines_give_the_same_greedy_tokens(size, built):
    bundle = built(size, "fp16")
    assert read_record(bundle / "engines" / local_target().folder)["precision"] == "fp16"
    engine = runtime.load(bundle, providers=["tensorrt", "cuda"])
    assert engine.sessions.engines is not None
    cpu = runtime.load(bundle, providers=["cpu"])
    for i in range(4):
        for question in QUESTIONS:
            for steering in (None, runtime.ScalingVis(0.5), runtime.AdaptVis(0.5, 2.0, 0.2)):
                a = engine.answer(random_image(i), question, steering=steering, max_new_tokens=8)
                b = cpu.answer(random_image(i), question, steering=steering, max_new_tokens=8)
                assert a.token_ids == b.token_ids, (size, i, question, steering)


def test_prompts_beyond_the_engines_limits_are_refused(built):
    engine = runtime.load(built("tiny", "fp32"), providers=["tensorrt", "cuda"])
    with pytest.raises(runtime.errors.PromptError, match="the TensorRT engines were built for"):
        engine.answer(random_image(0), "Where is the mug?", max_new_tokens=MAX_CONTEXT)
