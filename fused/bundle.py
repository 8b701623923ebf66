"""Add the fused decoder pair to an exported bundle: verify, build, check against the standard decoder, record.

    BUNDLE (verified: manifest digest, every file's sha256; refused otherwise)
    checkpoint --fused/graph.py--> BUNDLE/.fused-<dtype>.partial-<pid>/ decoder_plain_<dtype>.onnx,
                                   decoder_steered_<dtype>.onnx, decoder_fused_<dtype>.onnx_data
        --fused/parity.py (vs decoder.onnx)--> runtime.bundle_write.update_bundle: the three files, the
        manifest's fused_decoders[<dtype>] = {plain, steered, data, parity, ...} and the pair's io
        (an older pair or one-graph fused decoder of that dtype removed), re-signed, renamed into place

A failed build or parity check leaves the bundle as it was (a fused pair already there included).
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np

from graphs.contracts import plain_decoder_contract, steered_decoder_contract
from graphs.io_spec import GraphIO
from graphs.manifest import Manifest
from runtime.bundle import Bundle
from runtime.bundle_write import update_bundle
from runtime.errors import BundleError
from runtime.host_memory import available_bytes

from .errors import FuseError, FusedMemoryError
from .external import external_files
from .graph import build_fused_decoders, check_supported, fused_files
from .parity import check_parity, compare_decoders, tolerances
from .weights import CheckpointDecoder

DTYPES = {"fp32": np.float32, "fp16": np.float16}
_BASE_BYTES = 1_000_000_000      # Python, torch, ONNX Runtime, the inputs


def fuse_bundle(bundle: str | Path | Bundle, dtype: str = "fp32", checkpoint: str | Path | None = None,
                atol: float | None = None, providers=("CPUExecutionProvider",), log=print) -> dict:
    """Build the fused pair for ``dtype`` into ``bundle`` from ``checkpoint`` (default: the manifest's
    ``source_model``); returns its manifest record.  ``atol`` can only widen the logits tolerance against
    the standard decoder (``fused.parity.tolerances``); ``providers``: where the parity check runs."""
    if dtype not in DTYPES:
        raise FuseError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if atol is not None and not (isinstance(atol, (int, float)) and np.isfinite(atol) and atol > 0):
        raise FuseError(f"atol must be a positive number, got {atol!r}")
    try:
        opened = Bundle.open(bundle if isinstance(bundle, Bundle) else Path(bundle).expanduser().resolve())
    except BundleError as e:
        raise FuseError(f"{bundle} does not verify, so it is not re-signed with a fused decoder: {e}") from None
    folder, manifest = opened.folder, opened.manifest
    if not opened.family.fused_after_export:
        raise FuseError(f"{folder} is a {opened.family.name} bundle: its fused pair is built at export "
                        f"(python -m export CHECKPOINT --out {folder} --force; --no-fused leaves it out), "
                        f"and just fuse adds one to LLaVA bundles only")
    if manifest.quantization is not None:
        raise FuseError(f"{folder} is a quantized bundle; build the fused decoder into its source bundle "
                        f"(just quantize then quantizes the pair with the rest)")
    checkpoint = Path(checkpoint or manifest.source_model).expanduser()
    if not (checkpoint / "config.json").is_file():
        raise FuseError(f"the checkpoint {checkpoint} (the weights the fused decoder is built from) has no "
                        f"config.json; pass --checkpoint DIR")
    check_memory(folder, manifest, dtype, providers, log)
    t0 = time.perf_counter()
    source = CheckpointDecoder(checkpoint, DTYPES[dtype])
    _check_shape(source, manifest, checkpoint)
    check_supported(source.numbers)
    files = fused_files(dtype)
    partial = folder / f".fused-{dtype}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        built = build_fused_decoders(source, partial, dtype)
        del source
        log(f"built {files['plain']} ({built['nodes_per_layer']['plain']:.0f} nodes a layer) and "
            f"{files['steered']} ({built['nodes_per_layer']['steered']:.0f}) ({time.perf_counter() - t0:.1f}s)")
        built_graphs = {k: partial / files[k] for k in ("plain", "steered")}      # absolute: still in the partial folder
        worst = compare_decoders(folder, manifest, built_graphs, dtype, providers)
        limits, rule = tolerances(manifest, dtype, atol)
        log("parity against decoder.onnx: " + ", ".join(f"{k} {v:.2e} (limit {limits[k]:.2e})"
                                                         for k, v in worst.items()))
        check_parity(worst, limits, dtype)
        record = {**files, "dtype": dtype, "kv_layout": "shared past/present buffer", "parity": worst,
                  "parity_tolerance": limits, "parity_rule": rule, "nodes": built["nodes"],
                  "nodes_per_layer": built["nodes_per_layer"], "attention_op": built["attention_op"],
                  "ops": built["ops"], "checked_against": manifest.graphs["decoder"], "providers": ["cpu", "cuda"]}
        old = [f for f in _files_of(manifest, dtype) if f not in files.values()]
        update_bundle(opened, files={f: partial / f for f in files.values()}, remove=tuple(old),
                      fused_decoders={**(manifest.fused_decoders or {}), dtype: record},
                      io=_io_with_pair(manifest, files, dtype, old))
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return record


def _io_with_pair(manifest: Manifest, files: dict, dtype: str, removed: list[str]) -> dict | None:
    """The manifest's io with the pair's two graphs (None stays None: a bundle from before io binds by contract)."""
    if manifest.io is None:
        return None
    L = manifest.decoder.num_layers
    io = {f: spec for f, spec in manifest.io.items() if f not in removed}
    io[files["plain"]] = GraphIO.from_contract(plain_decoder_contract(L), dtype)
    io[files["steered"]] = GraphIO.from_contract(steered_decoder_contract(L), dtype)
    return io


def check_memory(folder: Path, manifest: Manifest, dtype: str, providers, log=None) -> int:
    """The memory the pair's check needs (returned), said first; ``FusedMemoryError`` where the machine lacks it.

    The check holds three decoders' sessions: the standard one, the plain one (its weights packed) and the
    steered one (the weights file mapped, its pages touched): each about the weights' bytes, twice that
    in fp16 on a CPU (ONNX Runtime computes fp16 MatMuls there in fp32, casting the weights once)."""
    decoder = manifest.graphs["decoder"]
    standard = sum((folder / f).stat().st_size for f in [decoder, *external_files(folder / decoder)])
    pair = standard * np.dtype(DTYPES[dtype]).itemsize // (2 if manifest.dtype == "fp16" else 4)
    on_cpu = list(providers)[0] == "CPUExecutionProvider"
    widen = {"fp16": 2 if on_cpu else 1, "fp32": 1}
    need = standard * widen[manifest.dtype] + 2 * pair * widen[dtype] + _BASE_BYTES
    available = available_bytes()
    if log:
        log(f"the fused {dtype} pair's check needs about {need / 1e9:.1f} GB"
            + (f"; {available / 1e9:.1f} GB available" if available is not None else ""))
    if available is not None and need > available:
        raise FusedMemoryError(f"the fused {dtype} pair's check against decoder.onnx needs about {need / 1e9:.1f} GB "
                               f"(three decoder sessions), and this machine has {available / 1e9:.1f} GB available; "
                               f"build the pair where that fits: just fuse BUNDLE --dtype {dtype}"
                               + (" --provider cuda" if dtype == "fp16" and on_cpu else ""))
    return need


def _files_of(manifest: Manifest, dtype: str) -> list[str]:
    """The files the bundle's fused decoder of ``dtype`` names now (either layout), or none."""
    record = (manifest.fused_decoders or {}).get(dtype)
    if not record:
        return []
    return [record["file"], record["file"] + "_data"] if "plain" not in record else \
        [record[k] for k in ("plain", "steered", "data")]


def _check_shape(source: CheckpointDecoder, manifest: Manifest, checkpoint: Path) -> None:
    n, d = source.numbers, manifest.decoder
    mine = (n.num_layers, n.num_heads, n.num_kv_heads, n.head_dim, n.hidden, n.vocab)
    theirs = (d.num_layers, d.num_attention_heads, d.num_key_value_heads, d.head_dim, d.hidden_size, d.vocab_size)
    if mine != theirs:
        raise FuseError(f"the checkpoint {checkpoint} has a decoder of (layers, heads, kv heads, head dim, hidden, "
                        f"vocab) {mine}, the bundle's is {theirs}: not the checkpoint it was exported from")
