"""Add a fused decoder to an exported bundle: build, check against the standard decoder, record.

    BUNDLE/decoder.onnx (standard, checked against PyTorch at export; kept for TensorRT)
    checkpoint --fused/graph.py--> BUNDLE/.decoder_fused_<dtype>.onnx.partial-<pid> (+ _data)
        --fused/parity.py (vs decoder.onnx)--> renamed to decoder_fused_<dtype>.onnx (+ _data)
        --> manifest.json: fused_decoders[<dtype>] = {file, parity, nodes_per_layer, ...}, sha256 of both files

A failed build or parity check leaves the bundle as it was (a fused decoder already there included).
"""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import numpy as np

from graphs.manifest import Manifest
from runtime.bundle import open_bundle, sha256_file

from .errors import FuseError
from .graph import build_fused_decoder
from .parity import check_parity, compare_decoders
from .weights import CheckpointDecoder

DTYPES = {"fp32": np.float32, "fp16": np.float16}


def fused_file(dtype: str) -> str:
    return f"decoder_fused_{dtype}.onnx"


def fuse_bundle(bundle: str | Path, dtype: str = "fp32", checkpoint: str | Path | None = None,
                atol: float | None = None, providers=("CPUExecutionProvider",), log=print) -> dict:
    """Build ``decoder_fused_<dtype>.onnx`` into ``bundle`` from ``checkpoint`` (default: the manifest's
    ``source_model``); returns its manifest record.  ``atol``: the logits tolerance against the standard
    decoder (fp32 1e-4, fp16 0.1 by default); ``providers``: where the parity check runs."""
    if dtype not in DTYPES:
        raise FuseError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    folder = Path(bundle).expanduser().resolve()
    manifest = open_bundle(folder, verify_checksums=False)
    if manifest.quantization is not None:
        raise FuseError(f"{folder} is a quantized bundle; build the fused decoder into its source bundle")
    checkpoint = Path(checkpoint or manifest.source_model).expanduser()
    if not (checkpoint / "config.json").is_file():
        raise FuseError(f"the checkpoint {checkpoint} (the weights the fused decoder is built from) has no "
                        f"config.json; pass --checkpoint DIR")
    t0 = time.perf_counter()
    source = CheckpointDecoder(checkpoint, DTYPES[dtype])
    _check_shape(source, manifest, checkpoint)
    name = fused_file(dtype)
    partial = folder / f".{name}.partial-{os.getpid()}"
    try:
        built = build_fused_decoder(source, partial)
        del source
        log(f"built {name}: {built['nodes']} nodes, {built['nodes_per_layer']:.1f} per layer "
            f"({time.perf_counter() - t0:.1f}s)")
        worst = compare_decoders(folder, manifest, partial.name, dtype, providers)
        log("parity against decoder.onnx: " + ", ".join(f"{k} {v:.2e}" for k, v in worst.items()))
        check_parity(worst, dtype, atol)
        _rename(partial, folder / name)        # the graph names its data file: point it at the final name
    except BaseException:
        for path in (partial, Path(str(partial) + "_data")):
            path.unlink(missing_ok=True)
        raise
    record = {"file": name, "dtype": dtype, "parity": worst, "nodes": built["nodes"],
              "nodes_per_layer": built["nodes_per_layer"], "attention_op": built["attention_op"], "ops": built["ops"],
              "checked_against": manifest.graphs["decoder"], "providers": ["cpu", "cuda"]}
    fused = dict(manifest.fused_decoders or {})
    fused[dtype] = record
    sha = dict(manifest.sha256)
    for f in (name, name + "_data"):
        sha[f] = sha256_file(folder / f)
    dataclasses.replace(manifest, fused_decoders=fused, sha256=sha).write(folder)
    return record


def _rename(partial: Path, final: Path) -> None:
    """Move the partial graph and its data file to ``final``, pointing the graph at the new data file."""
    import onnx

    model = onnx.load(str(partial), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = final.name + "_data"
    onnx.save(model, str(partial))
    Path(str(partial) + "_data").replace(Path(str(final) + "_data"))
    partial.replace(final)


def _check_shape(source: CheckpointDecoder, manifest: Manifest, checkpoint: Path) -> None:
    n, d = source.numbers, manifest.decoder
    mine = (n.num_layers, n.num_heads, n.num_kv_heads, n.head_dim, n.hidden, n.vocab)
    theirs = (d.num_layers, d.num_attention_heads, d.num_key_value_heads, d.head_dim, d.hidden_size, d.vocab_size)
    if mine != theirs:
        raise FuseError(f"the checkpoint {checkpoint} has a decoder of (layers, heads, kv heads, head dim, hidden, "
                        f"vocab) {mine}, the bundle's is {theirs}: not the checkpoint it was exported from")
