"""Build a bundle's three engines on this machine: ``build_bundle_engines`` (``python -m engines``).

    check (no GPU needed)   the bundle opens and is intact; the limits fit the model; the precision fits the graphs
    detect                  TensorRT version and GPU -> the folder engines/trt-<version>-sm<cc>/
    build                   vision, embed, decoder (one engine each, one profile each: engines/profiles.py),
                            reusing that folder's timing.cache; an EPContext model beside each engine
    record                  engines.json: TensorRT, GPU, precision, limits, profiles, seconds and bytes per engine

Everything is written into engines/.<folder>.partial-<pid> and renamed at the end
(``runtime.bundle_write.staged_folder``): a failed or interrupted build leaves the previous engines
(if any) in place.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

from graphs.manifest import Manifest
from runtime.bundle import Bundle
from runtime.bundle_write import staged_folder
from runtime.engine_target import local_target

from runtime.engine_layout import (GRAPHS, RECORD_SCHEMA, TIMING_CACHE_FILE, EngineError, context_model_file, engine_file,
                     engines_root, write_record)
from .build import build_engine
from .context_model import write_context_model
from .progress import make_monitor, start_progress
from .profiles import Limits, engine_limits, engine_profiles, profiles_as_json

PRECISIONS = ("fp16", "fp32")


def graph_precision(manifest: Manifest) -> str:
    """The precision the bundle's graphs compute in: "fp16" or "fp32"; EngineError for int8/int4."""
    quantized = (manifest.quantization or {}).get("precision")
    if quantized in ("int8", "int4"):
        raise EngineError(f"this bundle is {quantized} weight-only (MatMulNBits, a com.microsoft operator TensorRT's "
                          f"ONNX parser does not take); build engines from the fp16 or fp32 bundle instead")
    return "fp16" if manifest.dtype == "fp16" or quantized == "fp16" else "fp32"


def build_mode(graphs: str, requested: str | None) -> tuple[str, bool, bool]:
    """(engine precision, strongly typed, BuilderFlag.FP16) for graphs in ``graphs`` precision."""
    precision = requested or graphs
    if precision not in PRECISIONS:
        raise EngineError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if graphs == "fp16" and precision == "fp32":
        raise EngineError("the bundle's graphs are fp16: a TensorRT engine built from them computes in fp16 "
                          "(strongly typed); for an fp32 engine export an fp32 bundle (just export ... --dtype fp32)")
    if precision == graphs:
        return precision, True, False            # the precision is in the graph
    return precision, False, True                # fp32 graphs, fp16 engine: TensorRT picks fp16 kernels per layer


def check_request(bundle: Path | Bundle, precision: str | None, max_prompt: int | None, max_context: int | None,
                  workspace_gb: float | None) -> tuple[Bundle, Limits, tuple[str, bool, bool]]:
    """Everything that can be refused without TensorRT or a GPU; BundleError / EngineError."""
    bundle = Bundle.open(bundle, verify_checksums=True)
    if not bundle.family.tensorrt_engines:
        raise EngineError(f"{bundle.folder} is a {bundle.family.name} bundle: TensorRT engines are prebuilt for "
                          f"LLaVA bundles only so far; `just check {bundle.folder}` says which of its graphs "
                          f"TensorRT's parser would take")
    manifest = bundle.manifest
    limits = engine_limits(manifest, max_prompt, max_context)
    mode = build_mode(graph_precision(manifest), precision)
    if workspace_gb is not None and not workspace_gb > 0:
        raise EngineError(f"--workspace must be a positive number of GB, got {workspace_gb}")
    return bundle, limits, mode


def import_tensorrt():
    try:
        import tensorrt
    except ImportError:
        raise EngineError("the TensorRT Python bindings are not installed. On a Jetson use JetPack's own "
                          "(sudo apt install python3-libnvinfer; a venv made with --system-site-packages); on a "
                          "desktop GPU: pip install 'adaptvis-edge[tensorrt]' (NVIDIA's wheels). See the README, "
                          "'Install on a Jetson / desktop GPU'") from None
    major = int(str(tensorrt.__version__).split(".")[0])
    if major != 10:
        raise EngineError(f"TensorRT {tensorrt.__version__} found; this builder is written for TensorRT 10.x")
    return tensorrt


def build_bundle_engines(bundle: str | Path | Bundle, precision: str | None = None, max_prompt: int | None = None,
                         max_context: int | None = None, workspace_gb: float | None = None, log=print,
                         show_progress: bool = True) -> Path:
    """Build vision/embed/decoder engines for this machine into the bundle; returns their folder."""
    opened, limits, (engine_precision, strongly_typed, fp16_flag) = check_request(
        bundle if isinstance(bundle, Bundle) else Path(bundle).expanduser(), precision, max_prompt, max_context,
        workspace_gb)
    bundle, manifest = opened.folder, opened.manifest
    trt = import_tensorrt()
    target = local_target()
    root = engines_root(bundle)
    folder = root / target.folder
    root.mkdir(exist_ok=True)
    old_cache = folder / TIMING_CACHE_FILE
    timing_cache = old_cache.read_bytes() if old_cache.is_file() else b""
    profiles = engine_profiles(manifest, limits)
    log(f"building {engine_precision} engines for {target.describe()} into {folder} "
        f"(max prompt {limits.max_prompt}, max context {limits.max_context}"
        f"{', timing cache reused' if timing_cache else ''}; TensorRT engine builds take minutes on a Jetson)")
    if fp16_flag:
        log("note: fp32 graphs built with TensorRT's FP16 flag: TensorRT picks fp16 kernels layer by layer, the "
            "norms and softmax included; an fp16 export keeps those in fp32 (just export ... --dtype fp16)")
    record = {"schema_version": RECORD_SCHEMA, "tensorrt": target.tensorrt,
              "compute_capability": target.compute_capability, "gpu": target.gpu,
              "precision": engine_precision, "strongly_typed": strongly_typed,
              "max_prompt": limits.max_prompt, "max_context": limits.max_context, "workspace_gb": workspace_gb,
              "bundle_manifest_sha256": opened.model_sha256, "timing_cache": TIMING_CACHE_FILE,
              "timing_cache_reused": bool(timing_cache), "profiles_note": "one profile per engine (engines/profiles.py)",
              "engines": {}}
    started = time.perf_counter()
    progress = start_progress() if show_progress else None
    with staged_folder(folder) as partial:
        try:
            for i, graph in enumerate(GRAPHS, 1):
                log(f"[{i}/{len(GRAPHS)}] {graph}: {manifest.graphs[graph]}")
                t0 = time.perf_counter()
                size, timing_cache = _build_graph(trt, opened.graph(graph), partial, graph, profiles[graph],
                                                  strongly_typed, fp16_flag, workspace_gb, timing_cache,
                                                  make_monitor(trt, progress, log), target)
                seconds = time.perf_counter() - t0
                log(f"      {graph}: {size / 2**20:.1f} MiB in {seconds:.1f} s")
                record["engines"][graph] = {"engine": engine_file(graph), "context_model": context_model_file(graph),
                                            "bytes": size, "build_seconds": round(seconds, 2),
                                            "profiles": profiles_as_json(profiles[graph])}
        finally:
            if progress is not None:
                progress.stop()
        (partial / TIMING_CACHE_FILE).write_bytes(timing_cache)
        record["build_seconds"] = round(time.perf_counter() - started, 2)
        record["built_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        write_record(partial, record)
    log(f"done in {record['build_seconds']:.0f} s: {folder}")
    return folder


def _build_graph(trt, graph_path, partial, graph, profiles, strongly_typed, fp16_flag, workspace_gb, timing_cache,
                 monitor, target):
    size, timing_cache = build_engine(
        trt, graph_path, partial / engine_file(graph), profiles, strongly_typed=strongly_typed, fp16_flag=fp16_flag,
        workspace_bytes=int(workspace_gb * 2**30) if workspace_gb else None, timing_cache=timing_cache,
        monitor=monitor)
    write_context_model(graph_path, engine_file(graph), partial / context_model_file(graph), target.compute_capability)
    return size, timing_cache
