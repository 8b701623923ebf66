"""The runtimes timed beside our fp32 bundle in the same run.

    fp16 / int8 / int4        quantized copies of the bundle (``python -m quantize``), built once
    int4-level1               beside it (``<bundle>-fp16`` ...) and rebuilt when the source changes
    int8-dynamic[-vision]
    return-attention          the fp32 bundle, answering with ``return_attention=True``
    no-attention-outputs      the fp32 bundle with the decoder's attention outputs pruned away
                              (what a bundle exported before them computes): the graph-side
                              cost of leaving them on
    fused-int8 / fused-int4   the int8 / int4 copy answering with its quantized fused pair
    fused / fused-fp16        the same bundle with its fused decoder (``python -m fused``; fp32, or fp16
                              weights and activations), built into it once; "ours" is the standard decoder

Never imports torch (the memory worker imports ``prepare``'s products only).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from graphs.io_spec import GraphIO
from graphs.manifest import MANIFEST_DIGEST_FILE, MANIFEST_FILE, Manifest
from runtime.bundle import Bundle
from runtime.bundle_write import new_bundle, sign

# How the bench quantizes: ONNX Runtime's MatMulNBits with int8 arithmetic (accuracy level 4), the
# lever for the compute-bound prefill; int4 also quantizes the LM head (fp32 it is 6% of a
# 1b decoder's fp32 bytes, a quarter of its int4 bytes, and every decode step reads it).
QUANTIZE = {
    "fp16": {"to": "fp16"},
    "int8": {"to": "int8", "block_size": 32, "accuracy_level": 4},
    "int4": {"to": "int4", "block_size": 32, "accuracy_level": 4, "lm_head": True},
    # the same int4 weights with fp32 arithmetic (accuracy level 1): is int8 arithmetic the faster one here?
    "int4-level1": {"to": "int4", "block_size": 32, "accuracy_level": 1, "lm_head": True},
    # int8 weights and activations (MatMulInteger): integer arithmetic in the prefill too; -vision also
    # quantizes the vision tower, the other compute-bound phase
    "int8-dynamic": {"to": "int8-dynamic", "lm_head": True},
    "int8-dynamic-vision": {"to": "int8-dynamic", "lm_head": True, "vision": True},
}
FUSED = {"fused": "fp32", "fused-fp16": "fp16"}          # variant -> the fused decoder's dtype
# the quantized copies above, answering with their fused pair (quantized with the rest) instead of decoder.onnx
FUSED_QUANTIZED = {"fused-int8": "int8", "fused-int4": "int4"}
NAMES = (*QUANTIZE, "return-attention", "no-attention-outputs", *FUSED, *FUSED_QUANTIZED)
# fp16 is opt-in: ONNX Runtime's CPU provider has no fast fp16 MatMul on x86 (a 2-token 1b answer ran
# over 7 minutes); no-attention-outputs is another full copy of the fp32 bundle in memory (1b: 5.6 GB
# more, which with the reference and the rest swapped a 24 GiB machine).
DEFAULT = "int8,int4,int8-dynamic-vision,return-attention"
METHODS = ("plain", "adaptvis")            # variants skip ScalingVis (it costs what plain costs)
ATTENTION_OUTPUTS = ("last_row_attention", "image_attention_share")


@dataclass
class Variant:
    name: str                 # as given to --variants
    side: str                 # key in the result JSON: "ours_int4", ...
    bundle: Path
    answer_kwargs: dict = field(default_factory=dict)
    built: bool = False       # made by this run
    shares_runtime: bool = False   # answers with the fp32 runtime object (return-attention)
    decoder: str = "standard"      # runtime.load(decoder=...): which decoder graph of the bundle it runs


def parse(text: str) -> list[str]:
    """'fp16,int4' -> ['fp16', 'int4']; 'none' or '' -> []; unknown names raise ValueError."""
    names = [n.strip() for n in text.split(",") if n.strip() and n.strip() != "none"]
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; known: {', '.join(NAMES)} (or none)")
    return list(dict.fromkeys(names))


def prepare(source: Path, names: list[str], log=print) -> list[Variant]:
    out = []
    for name in names:
        side = "ours_" + name.replace("-", "_")
        if name in QUANTIZE:
            folder = source.parent / f"{source.name}-{name}"
            built = _ensure_quantized(source, folder, QUANTIZE[name], log)
            out.append(Variant(name, side, folder, built=built))
        elif name in FUSED_QUANTIZED:
            folder = source.parent / f"{source.name}-{FUSED_QUANTIZED[name]}"
            built = _ensure_quantized(source, folder, QUANTIZE[FUSED_QUANTIZED[name]], log)
            out.append(Variant(name, side, folder, built=built, decoder="fused-fp32"))
        elif name in FUSED:
            built = _ensure_fused(source, FUSED[name], log)
            out.append(Variant(name, side, source, built=built, decoder=f"fused-{FUSED[name]}"))
        elif name == "return-attention":
            out.append(Variant(name, side, source, {"return_attention": True}, shares_runtime=True))
        else:
            folder = source.parent / f"{source.name}-no-attention-outputs"
            built = _ensure_pruned(source, folder, log)
            out.append(Variant(name, side, folder, built=built))
    return out


def _ensure_fused(source: Path, dtype: str, log) -> bool:
    if dtype in (Manifest.read(source).fused_decoders or {}):
        return False
    from fused import fuse_bundle      # optional: it imports onnx (the export extra)

    log(f"building the fused {dtype} decoder into {source}")
    fuse_bundle(source, dtype, log=lambda m: log(f"  {m}"))
    return True


def _source_digest(source: Path) -> str:
    return hashlib.sha256((source / MANIFEST_FILE).read_bytes()).hexdigest()


def _ensure_quantized(source: Path, folder: Path, settings: dict, log) -> bool:
    manifest = folder / MANIFEST_FILE
    if manifest.is_file():
        q = json.loads(manifest.read_text()).get("quantization") or {}
        if q.get("source_sha256") == _source_digest(source) and _same_settings(q, settings):
            return False
    from quantize import quantize_bundle   # optional: it imports onnx (the export extra)

    log(f"quantizing {source} -> {folder} ({settings})")
    quantize_bundle(source, folder, force=True, log=lambda m: log(f"  {m}"), **settings)
    return True


def _same_settings(record: dict, settings: dict) -> bool:
    if record.get("precision") != settings["to"]:
        return False
    if any(record.get(key) != settings[key] for key in ("block_size", "accuracy_level") if key in settings):
        return False
    if bool(record.get("symmetric")) != settings.get("symmetric", False):
        return False
    if ((record.get("graphs") or {}).get("vision") != {"copied": True}) != settings.get("vision", False):
        return False
    return record.get("lm_head") == ("quantized" if settings.get("lm_head") else "as exported")


def _ensure_pruned(source: Path, folder: Path, log) -> bool:
    """``source`` with the decoder's attention outputs removed; every other file is a copy of the source's."""
    stamp = folder / ".source_sha256"
    if (folder / MANIFEST_FILE).is_file() and stamp.is_file() and stamp.read_text() == _source_digest(source):
        return False
    import onnx                        # optional: onnx (the export extra)

    log(f"pruning the attention outputs: {source} -> {folder}")
    manifest = Bundle.open(source).manifest
    decoder_file = manifest.graphs["decoder"]
    with new_bundle(folder, force=True) as partial:
        for item in source.iterdir():
            if item.is_file() and item.name not in (MANIFEST_FILE, MANIFEST_DIGEST_FILE, decoder_file) \
                    and not item.name.startswith("."):
                _link(item, partial / item.name)
        model = onnx.load(str(source / decoder_file), load_external_data=False)
        prune_outputs(model, ATTENTION_OUTPUTS)
        onnx.save(model, str(partial / decoder_file))
        outputs = {**manifest.outputs, "decoder": [o for o in manifest.outputs["decoder"] if o not in ATTENTION_OUTPUTS]}
        io = manifest.io and {**manifest.io, decoder_file: GraphIO(
            manifest.io[decoder_file].inputs,
            tuple(t for t in manifest.io[decoder_file].outputs if t.role not in ATTENTION_OUTPUTS))}
        known = {f: d for f, d in manifest.sha256.items() if f != decoder_file}
        sign(partial, dataclasses.replace(manifest, outputs=outputs, io=io), known)
        (partial / stamp.name).write_text(_source_digest(source))          # a dot file: not signed
    return True


def _link(source: Path, target: Path) -> None:
    """A copy: ONNX Runtime refuses external data behind a symlink that leaves the folder, and onnx
    refuses to load external data from a file with several hard links (it would break quantizing the source)."""
    shutil.copy2(source, target)


def prune_outputs(model, names) -> int:
    """Drop graph outputs ``names`` and every node and initializer only they needed; returns nodes removed."""
    graph = model.graph
    keep_outputs = [o for o in graph.output if o.name not in names]
    del graph.output[:]
    graph.output.extend(keep_outputs)
    needed = {o.name for o in keep_outputs}
    kept = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            needed.update(i for i in node.input if i)
            kept.append(node)
    removed = len(graph.node) - len(kept)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    inits = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    return removed
