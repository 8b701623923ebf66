"""Export a Qwen2.5-VL or Qwen3-VL checkpoint into a bundle folder, written whole or not at all.

    checkpoint --QwenReference--> the model (eager attention) + the AdaptVis reference
        |-- QwenVision   --torch.onnx.export--> vision.onnx   (one graph, every grid)
        |-- QwenEmbedding ------------------->  embed.onnx
        `-- QwenDecoder  ------------------->  decoder.onnx  (M-RoPE, KV cache, steering, DeepStack)
    parity (ONNX Runtime vs transformers / the reference; tolerance by fp32 rounding; ParityError if over)
    tokenizer.json, chat_template.json, preprocessor_config.json copied; manifest.json (graphs/qwen_manifest.py)

Everything goes into ``.<out>.partial-<pid>`` beside the target (``runtime.bundle_write.new_bundle``), is signed by
``runtime.bundle_write.sign`` (the digest table, manifest.json, manifest.sha256 last) once the three graphs are
checked, again with the fused pair's record and files, and renamed at the end.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from graphs.manifest import DEFAULT_ATTENTION_FORM
from graphs.qwen_manifest import QwenManifest
from graphs.qwen_vl_contracts import qwen_contracts
from runtime.bundle_write import check_target, new_bundle, sign
from runtime.families import Family
from runtime.qwen_vl.vision_feeds import VisionSpec

from ..errors import ExportError, UnsupportedModelError
from .onnx_export import DEFAULT_OPSET

# Copied from the checkpoint when present: what the runtime reads besides the graphs
CHECKPOINT_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.json", "chat_template.jinja",
                    "preprocessor_config.json", "generation_config.json")
REQUIRED_FILES = ("tokenizer.json", "preprocessor_config.json")
IMAGE_PLACEHOLDER = "<|image_pad|>"
_QUESTION_SENTINEL = "QUESTION_SENTINEL_7F3A"


def export_qwen(source, family: Family, out: Path, *, opset: int = DEFAULT_OPSET, atol: float | None = None,
                force: bool = False, attention_form: str = DEFAULT_ATTENTION_FORM, fused: bool = True,
                log=None) -> QwenManifest:
    """``source``: an ``export.source.Source`` of a Qwen checkpoint; ``family`` its ``runtime.families`` entry.
    ``fused``: also build the fused plain + steered decoder pair (``export/qwen_vl/fused.py``), checked against
    decoder.onnx and the PyTorch reference, and record it as the manifest's ``fused_decoders``."""
    log = log or _stderr_log
    out = Path(out).expanduser().resolve()
    check_target(out, force)                   # BundleExistsError before any work
    with new_bundle(out, force) as partial:    # renamed to out at the end; removed on failure
        manifest = _export_into(source, family, partial, opset, atol, attention_form, fused, log)
    log(f"bundle ready: {out}")
    return manifest


def _export_into(source, family: Family, folder: Path, opset: int, atol, attention_form: str, fused: bool,
                 log) -> QwenManifest:

    from ..qwen_reference import QwenReference
    from . import parity
    from .decoder import QwenDecoder, QwenEmbedding
    from .onnx_export import decoder_trace_inputs, embed_trace_inputs, export_graph, vision_trace_inputs
    from .vision import QwenVision

    t0 = time.perf_counter()
    missing = [f for f in REQUIRED_FILES if not (source.folder / f).is_file()]
    if missing:
        raise UnsupportedModelError(f"{source.folder} lacks {', '.join(missing)}: a Qwen bundle needs them")
    log(f"loading {source.name} ({family.name}, fp32)")
    reference = QwenReference(source.folder)
    model = reference.model
    config = json.loads((source.folder / "config.json").read_text())
    spec = VisionSpec.from_config(config["vision_config"])
    vision, embed, decoder = QwenVision(model), QwenEmbedding(model), QwenDecoder(model, attention_form)
    contracts = qwen_contracts(decoder.num_layers, vision.window, bool(vision.deepstack))
    traces = {"vision": (vision, vision_trace_inputs(model, spec)), "embed": (embed, embed_trace_inputs(model)),
              "decoder": (decoder, decoder_trace_inputs(model, decoder.deepstack))}
    for name, (module, args) in traces.items():
        t = time.perf_counter()
        export_graph(module, args, contracts[name], folder / f"{name}.onnx", opset)
        log(f"exported {name}.onnx in {time.perf_counter() - t:.1f}s")
    t = time.perf_counter()
    sessions = {name: ort.InferenceSession(str(folder / f"{name}.onnx"), providers=["CPUExecutionProvider"])
                for name in contracts}
    measured = parity.Measured()
    parity.vision_parity(model, vision, sessions["vision"], spec, measured)
    ids = np.arange(3, 40, dtype=np.int64)[None] % config["text_config"]["vocab_size"]
    parity.embed_parity(embed, sessions["embed"], ids, measured)
    parity.decoder_parity(reference, model, decoder, sessions["embed"], sessions["decoder"], contracts["decoder"],
                          parity_image(), measured)
    depth = {"vision": len(model.model.visual.blocks) + 2, "vision.deepstack": len(model.model.visual.blocks),
             "embed": 1, "decoder": decoder.num_layers, "decoder.present_relative": decoder.num_layers,
             "decoder.attention": decoder.num_layers}
    limits = parity.check(measured, depth, atol)
    log("parity " + ", ".join(f"{k} {v:.2e} (tolerance {limits.limits[k]:.2e})" for k, v in sorted(measured.worst.items()))
        + f" ({time.perf_counter() - t:.1f}s)")
    del sessions
    for name in CHECKPOINT_FILES:
        if (source.folder / name).is_file():
            shutil.copyfile(source.folder / name, folder / name)
    manifest = _manifest(source, family, config, spec, contracts, measured, limits, opset, attention_form, folder,
                         reference)
    manifest = sign(folder, manifest)          # the fused pair's checks open the bundle (QwenModel) from here
    if fused:
        from .fused import fused_record
        record = fused_record(model, reference, folder, dict(limits.limits), parity.QUESTION, parity_image(), log)
        manifest = sign(folder, dataclasses.replace(manifest, fused_decoders={"fp32": record}))   # the pair's files too
    log(f"export took {time.perf_counter() - t0:.1f}s")
    return manifest


def parity_image():
    """A 150 x 90 image of smooth colour gradients (a non-square grid); deterministic."""

    y, x = np.mgrid[0:90, 0:150] / 150.0
    rgb = np.stack([np.sin(6 * x) * 0.5 + 0.5, np.cos(4 * y + x) * 0.5 + 0.5, (x + y) / 1.6], axis=-1)
    return Image.fromarray((rgb * 255).astype(np.uint8))


def _manifest(source, family, config, spec, contracts, measured, limits, opset, attention_form, folder,
              reference) -> QwenManifest:
    import onnx
    import torch
    import transformers

    from .parity import ALPHAS, VISION_GRIDS

    text, vis = config["text_config"], config["vision_config"]
    heads = text["num_attention_heads"]
    rope = text.get("rope_scaling") or {}
    tokens = {"image": config["image_token_id"], "video": config.get("video_token_id"),
              "vision_start": config.get("vision_start_token_id"), "vision_end": config.get("vision_end_token_id"),
              "eos": text.get("eos_token_id"), "pad": text.get("pad_token_id")}
    files = {"tokenizer": "tokenizer.json", "preprocessor_config": "preprocessor_config.json",
             "chat_template": next((f for f in ("chat_template.json", "chat_template.jinja") if (folder / f).is_file()), "")}
    return QwenManifest(
        family=family.model_type, source_model=source.name,
        graphs={name: c.record(f"{name}.onnx", "fp32") for name, c in contracts.items()},
        decoder={"num_layers": text["num_hidden_layers"], "num_attention_heads": heads,
                 "num_key_value_heads": text["num_key_value_heads"],
                 "head_dim": text.get("head_dim") or text["hidden_size"] // heads, "hidden_size": text["hidden_size"],
                 "vocab_size": text["vocab_size"], "max_position_embeddings": text["max_position_embeddings"]},
        vision={**spec.to_dict(), "temporal_patch_size": vis["temporal_patch_size"], "in_channels": vis["in_channels"]},
        mrope={"section": list(rope.get("mrope_section", [])), "interleaved": family.mrope_interleaved,
               "theta": text.get("rope_theta")},
        deepstack_layers=len(vis.get("deepstack_visual_indexes") or []),
        tokens=tokens, stop_token_ids=list(reference.stop_ids), prompt_template=_prompt_template(reference.tokenizer),
        image_placeholder=IMAGE_PLACEHOLDER, files=files, dtype="fp32", opset=opset, attention_form=attention_form,
        exporter_versions={"torch": torch.__version__, "transformers": transformers.__version__, "onnx": onnx.__version__},
        parity=dict(measured.worst), parity_tolerance=dict(limits.limits), parity_rule=dict(limits.rules),
        parity_fp32_noise=dict(measured.noise), parity_wrapper=dict(measured.wrapper),
        parity_cases={"vision_grids": [list(g) for g in VISION_GRIDS], "decoder": [a[0] for a in ALPHAS],
                      "decoder_steps": "prefill in two calls (steered rows last), one cached decode step"},
    )


def _prompt_template(tokenizer) -> str:
    """The checkpoint's chat template rendered once for one image and a question (the runtime needs no Jinja)."""
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": _QUESTION_SENTINEL}]}]
    rendered = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    if rendered.count(_QUESTION_SENTINEL) != 1 or rendered.count(IMAGE_PLACEHOLDER) != 1:
        raise ExportError(f"the chat template does not place the question and {IMAGE_PLACEHOLDER} exactly once: "
                          f"{rendered!r}")
    return rendered.replace("{", "{{").replace("}", "}}").replace(_QUESTION_SENTINEL, "{question}")


def _stderr_log(message: str) -> None:
    print(f"[export] {message}", file=sys.stderr, flush=True)
