"""Export a LLaVA checkpoint into a self-describing bundle folder.

    checkpoint --load--> LlavaForConditionalGeneration (the export dtype: the checkpoint's own by default; eager)
        |-- VisionEncoder  --optimum export--> vision.onnx
        |-- TokenEmbedding --optimum export--> embed.onnx
        `-- SteeredDecoder --optimum export--> decoder.onnx (+ decoder.onnx_data when > 2 GB)
    tokenizer.json, parity check (ONNX Runtime vs PyTorch), manifest.json (with sha256 of every file)

Before anything is loaded the export states its expected peak memory and refuses at once where the
machine has less available (``export/memory_need.py``).
Everything is written into ``.<out>.partial-<pid>`` beside the target, signed and renamed
at the very end (``runtime.bundle_write.new_bundle``), so a failure (parity, full disk, Ctrl-C)
never leaves a folder that looks like a complete bundle.
"""
from __future__ import annotations

import gc
import sys
import time
import warnings
from importlib.metadata import version
from pathlib import Path

from graphs.contracts import PAST_KEY, PAST_VALUE, PRESENT_KEY, PRESENT_VALUE, bundle_contracts
from graphs.io_spec import GraphIO
from graphs.manifest import SCHEMA_VERSION, DecoderShape, Manifest, Preprocessing
from runtime.bundle import Bundle
from runtime.bundle_write import check_target, new_bundle, sign

from fused import FuseError, FusedMemoryError, UnsupportedDecoderError, fuse_bundle

from .errors import ExportError
from .memory_log import NO_MEMORY_LOG, MemoryLog, checkpoint_bytes
from .memory_need import check_memory, default_dtype, parameter_count
from .release import drop_unused_pages, trim_heap
from .settings import ExportSettings
from .source import resolve

# The parity check's decoder ranges: the fp32 bytes of a range's weights (what ONNX Runtime holds for
# it on a CPU) at most this fraction of the model's weights in the export dtype (export/range_parity.py).
PARITY_RANGE_FRACTION = 0.25
_QUESTION_SENTINEL = "QUESTION_SENTINEL_7F3A"


def export_llava(model: str, out: Path, settings: ExportSettings | None = None, *, force: bool = False,
                 log=None, **options) -> Manifest:
    """Export ``model`` (alias, hub id or local folder) into the bundle folder ``out``.

    ``settings`` (default ``ExportSettings()``), with any of its fields given as keyword ``options``
    on top (``export_llava(m, out, dtype="fp16", atol=0.1)``); ``force`` replaces a bundle at ``out``.
    """
    log = log or _stderr_log
    settings = (settings or ExportSettings()).with_options(**options)
    out = Path(out).expanduser().resolve()
    check_target(out, force)           # before minutes of work
    source = resolve(model, settings.revision)
    if settings.dtype is None:
        settings = settings.with_options(dtype=default_dtype(source.folder))
    if settings.parity_cases is None:
        from .parity import ALL_CASES_MAX_PARAMETERS

        big = parameter_count(source.folder) > ALL_CASES_MAX_PARAMETERS
        settings = settings.with_options(parity_cases="per-layer-head" if big else "all")
    if settings.check_memory:
        check_memory(source.folder, settings.dtype, 1 if settings.parity_cases == "per-layer-head" else 4, log)
    memory = (NO_MEMORY_LOG if settings.memory_log is None else
              MemoryLog(settings.memory_log, log, checkpoint_bytes(source.folder)))
    try:
        with new_bundle(out, force) as partial:
            manifest = _export_into(source, partial, settings, log, memory)
            if settings.fused:
                with memory.phase("fused decoder pair"):
                    manifest = _add_fused_pair(partial, source.folder, settings, log)
    finally:
        memory.write()          # the phases so far, also when the export failed
    log(f"bundle ready: {out}")
    return manifest


def _add_fused_pair(folder: Path, checkpoint: Path, settings: ExportSettings, log) -> Manifest:
    """The fused pair beside decoder.onnx (``fused.fuse_bundle``: built, checked, recorded), or a line saying why not."""
    try:
        fuse_bundle(folder, settings.dtype, checkpoint=checkpoint, atol=settings.atol, log=log)
    except (UnsupportedDecoderError, FusedMemoryError) as e:
        log(f"no fused decoder pair (the standard decoder serves every provider): {e}")
    except FuseError as e:
        raise ExportError(f"the fused decoder pair failed: {e} (--no-fused exports without it)") from None
    return Bundle.open(folder, verify_checksums=False).manifest      # signed here, just now


def _export_into(source, folder: Path, settings: ExportSettings, log, memory=NO_MEMORY_LOG) -> Manifest:
    import torch
    from optimum.exporters.onnx import export
    from transformers import AutoProcessor, LlavaForConditionalGeneration


    from .bound_weights import bind_weights, trace_only
    from .onnx_configs import DecoderOnnxConfig, EmbedOnnxConfig, VisionOnnxConfig
    from .external_data import consolidate, streaming_external_data
    from .parity import ReferenceRecorder, compare_with_onnx
    from .wrappers import SteeredDecoder, TokenEmbedding, VisionEncoder

    dtype, atol, bound_weights, parity_layers = settings.dtype, settings.atol, settings.bound_weights, settings.parity_layers
    t0 = time.perf_counter()
    log(f"loading {source.name} ({dtype}; parity cases: {settings.parity_cases})")
    # Loaded in the export's dtype: an fp16 export never holds an fp32 copy of the model
    # (LLaVA-1.5-7B: 14 GB instead of 28 GB).
    with memory.phase("load"):
        model = LlavaForConditionalGeneration.from_pretrained(
            source.folder, dtype=torch.float16 if dtype == "fp16" else torch.float32,
            attn_implementation="eager", low_cpu_mem_usage=True).eval()
        processor = AutoProcessor.from_pretrained(source.folder, use_fast=False)
    weight_bytes = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    wrappers = {"vision": VisionEncoder(model), "embed": TokenEmbedding(model), "decoder": SteeredDecoder(model, settings.attention_form)}
    configs = {"vision": VisionOnnxConfig(model.config, dtype), "embed": EmbedOnnxConfig(model.config.text_config, dtype),
               "decoder": DecoderOnnxConfig(model.config.text_config, dtype)}
    config = model.config
    recorder = ReferenceRecorder(config, dtype, cases=settings.parity_cases)
    contracts = bundle_contracts(config.text_config.num_hidden_layers)
    for name in ("vision", "embed", "decoder"):
        t = time.perf_counter()
        part = wrappers.pop(name)
        tracing = trace_only() if bound_weights else streaming_external_data()
        with memory.phase(f"trace {name}"), tracing, warnings.catch_warnings():
            # The tracer's notes on CLIP's image-size branch (the size is fixed per checkpoint) and on
            # the mask's constant fill value: both are meant to be constants in the graph.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            export(part, configs[name], folder / f"{name}.onnx", opset=settings.opset, disable_dynamic_axes_fix=True)
        if bound_weights:    # the weights, one tensor at a time, from the module that was traced
            with memory.phase(f"weights {name}"):
                bind_weights(folder / f"{name}.onnx", part, contracts[name].input_names)
        # The reference runs in fp32 arithmetic on the (fp16-rounded) weights that were exported.
        with memory.phase(f"reference {name}"):
            getattr(recorder, name)(part)
        del part
        if name == "decoder":
            del model
            gc.collect()
        else:                   # peak memory: never the whole model next to an exported graph
            _release(model, name, source.folder)
        trim_heap()             # the phase's transients, kept by the allocator
        if not bound_weights:
            consolidate(folder / f"{name}.onnx")   # > 2 GB: one data file, one tensor at a time
        log(f"exported {name}.onnx in {time.perf_counter() - t:.1f}s")
    t = time.perf_counter()
    if parity_layers == 0 or (parity_layers is None and dtype == "fp32"):
        # the whole decoder in one session: the graph as users run it (ONNX Runtime fuses across the
        # layers' boundaries); an fp32 session holds no more than the model just freed
        ranges = {}
    elif parity_layers:
        ranges = {"decoder_range_layers": parity_layers}
    else:           # fp16: a whole session would cast every weight to fp32 on x86, twice the checkpoint
        ranges = {"decoder_range_bytes": int(PARITY_RANGE_FRACTION * weight_bytes)}
    parity = compare_with_onnx(folder, recorder.cases, dtype, atol, phase=memory.phase, log=log, **ranges)
    log("parity " + ", ".join(f"{k} {v:.2e} (tolerance {parity.tolerances.limits[k]:.2e})"
                              for k, v in parity.worst.items()) + f" ({time.perf_counter() - t:.1f}s)")
    if parity.tolerances.noise and dtype == "fp32":
        log("parity: PyTorch fp32 vs float64 " + ", ".join(f"{k} {v:.2e}" for k, v in parity.tolerances.noise.items())
            + "; by magnitude and depth (the rule without a float64 run) the tolerances would be "
            + ", ".join(f"{k} {v:.2e}" for k, v in parity.tolerances.by_depth.items()))
    elif parity.tolerances.noise:
        log("parity: PyTorch fp16 vs the fp32 reference "
            + ", ".join(f"{k} {v:.2e}" for k, v in parity.tolerances.noise.items()))
    with memory.phase("manifest"):
        processor.tokenizer.backend_tokenizer.save(str(folder / "tokenizer.json"))
        manifest = sign(folder, _manifest(source, config, processor, settings, parity))
    log(f"export took {time.perf_counter() - t0:.1f}s")
    return manifest


def _release(model, exported: str, checkpoint: Path) -> None:
    """Drop the weights of a part that is exported and recorded (the decoder is dropped with the model),
    and the pages of the checkpoint's mapped files that held them."""
    if exported == "vision":
        model.model.vision_tower = None
        model.model.multi_modal_projector = None
    elif exported == "embed":
        model.model.language_model.embed_tokens = None
    gc.collect()
    drop_unused_pages(model, sorted(Path(checkpoint).glob("*.safetensors")))


def _manifest(source, config, processor, settings: ExportSettings, parity) -> Manifest:
    """The manifest of the exported graphs (its digest table is filled in when it is signed)."""
    import onnx                                   # heavy, optional: the export extra
    import torch
    import transformers

    cfg, text = config, config.text_config
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    ip = processor.image_processor
    size = ip.size.get("shortest_edge") or min(ip.size["height"], ip.size["width"])
    crop = ip.crop_size if ip.do_center_crop else {"height": size, "width": size}
    tok = processor.tokenizer
    contracts = bundle_contracts(text.num_hidden_layers)
    with_image = _image_tokens(config)
    return Manifest(
        schema_version=SCHEMA_VERSION,
        source_model=source.name, source_revision=source.revision,
        graphs={name: f"{name}.onnx" for name in contracts},
        inputs={n: c.input_names for n, c in contracts.items()},
        outputs={n: c.output_names for n, c in contracts.items()},
        io={f"{n}.onnx": GraphIO.from_contract(c, settings.dtype) for n, c in contracts.items()},
        past_key_template=PAST_KEY, past_value_template=PAST_VALUE,
        present_key_template=PRESENT_KEY, present_value_template=PRESENT_VALUE,
        decoder=DecoderShape(text.num_hidden_layers, heads, text.num_key_value_heads, head_dim,
                             text.hidden_size, text.vocab_size, text.max_position_embeddings),
        image_token_id=cfg.image_token_index, image_tokens_per_image=with_image, image_hidden_size=text.hidden_size,
        image_grid=_image_grid(config), image_cls_token=cfg.vision_feature_select_strategy == "full",
        preprocessing=Preprocessing(
            resize_shortest_edge=int(size), crop_height=int(crop["height"]), crop_width=int(crop["width"]),
            do_center_crop=bool(ip.do_center_crop), resample=int(ip.resample),
            rescale_factor=float(ip.rescale_factor), image_mean=tuple(float(x) for x in ip.image_mean),
            image_std=tuple(float(x) for x in ip.image_std), pad_to_square=settings.pad_to_square),
        prompt_template=_prompt_template(processor),
        image_placeholder=getattr(processor, "image_token", "<image>"),
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        dtype=settings.dtype, opset=settings.opset,
        exporter_versions={"torch": torch.__version__, "transformers": transformers.__version__,
                           "optimum": version("optimum"), "optimum-onnx": version("optimum-onnx"),
                           "onnx": onnx.__version__},
        parity=parity.worst, parity_tolerance=parity.tolerances.limits, parity_rule=parity.tolerances.rules,
        parity_fp32_noise=(parity.tolerances.noise or None) if settings.dtype == "fp32" else None,
        parity_fp16_noise=(parity.tolerances.noise or None) if settings.dtype == "fp16" else None,
        attention_form=settings.attention_form,
    )


def _image_tokens(cfg) -> int:
    v = cfg.vision_config
    patches = (v.image_size // v.patch_size) ** 2
    return patches + (1 if cfg.vision_feature_select_strategy == "full" else 0)


def _image_grid(cfg) -> tuple[int, int]:
    """CLIP's patch grid (rows, cols): its patch convolution's output, flattened row-major into tokens."""
    v = cfg.vision_config
    return (v.image_size // v.patch_size, v.image_size // v.patch_size)


def _prompt_template(processor) -> str:
    """Render the checkpoint's chat template once, so the runtime needs no Jinja."""
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": _QUESTION_SENTINEL}]}]
    if getattr(processor, "chat_template", None):
        rendered = processor.apply_chat_template(conversation, add_generation_prompt=True)
    else:   # LLaVA-1.5's own template, which llava-hf checkpoints carry
        rendered = f"USER: <image>\n{_QUESTION_SENTINEL} ASSISTANT:"
    if rendered.count(_QUESTION_SENTINEL) != 1:
        raise ExportError(f"the chat template does not place the question exactly once: {rendered!r}")
    rendered = rendered.replace("{", "{{").replace("}", "}}")
    return rendered.replace(_QUESTION_SENTINEL, "{question}")


def _stderr_log(message: str) -> None:
    print(f"[export] {message}", file=sys.stderr, flush=True)
