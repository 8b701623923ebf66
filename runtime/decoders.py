"""Which decoder graph of a bundle a session opens: the standard one or a fused one.

    bundle: decoder.onnx                   standard ONNX ops: every provider, TensorRT included
            decoder_plain_<dtype>.onnx     the fused pair: ONNX Runtime contrib ops, one shared KV buffer
            decoder_steered_<dtype>.onnx   a layer (manifest "fused_decoders"): CPU, CUDA

    "auto" (default): TensorRT first -> standard; else the fused one in the bundle's dtype if the bundle
                      has it, else standard; never an fp32 GroupQueryAttention decoder on CUDA (below).
                      "standard", "fused" (the bundle's dtype's, else the one there is), "fused-fp32",
                      "fused-fp16": exactly that one, or an error naming what there is.

ONNX Runtime's CUDA provider (1.31) has GroupQueryAttention kernels for fp16 and bf16 only: in an fp32
fused decoder that node runs on the CPU, its KV cache copied across every step (measured on an H200:
2.7x slower than the standard decoder), so "auto" keeps the standard decoder there; an fp16 fused
decoder (``just fuse BUNDLE --dtype fp16``, asked for with decoder="fused-fp16") is the one for a GPU.
"auto" never changes the precision the bundle was exported in.

The fused pair is checked against the standard decoder when it is built; a fused decoder's float
type may differ from the bundle's (an fp16 pair in an fp32 bundle), so the caller feeds
``DecoderChoice.dtype``.  A fused record of an earlier layout (one graph, ``file``) is left for
the standard decoder by "auto" and refused when asked for by name (rebuild it: ``just fuse``).
"""
from __future__ import annotations

from dataclasses import dataclass

from graphs.manifest import Manifest

from .errors import BundleError, ProviderError

DECODERS = ("auto", "standard", "fused", "fused-fp32", "fused-fp16")


@dataclass(frozen=True)
class DecoderChoice:
    flavour: str        # "standard" | "fused"
    file: str           # the graph that decodes: decoder.onnx, or the fused pair's plain graph
    dtype: str          # "fp32" | "fp16": its embeddings' and KV cache's float type
    steered_file: str | None = None     # the fused pair's steered graph


def choose_decoder(manifest: Manifest, providers: list[str], wanted: str = "auto") -> DecoderChoice:
    return choose(manifest.graphs["decoder"], manifest.dtype, manifest.fused_decoders, providers, wanted)


def choose(decoder_file: str, bundle_dtype: str, fused_decoders: dict | None, providers: list[str],
           wanted: str = "auto") -> DecoderChoice:
    """``choose_decoder`` from what any family's manifest records: its standard decoder's file, its float
    type and its fused decoder records (``{dtype: {"plain", "steered", ...}}`` or None)."""
    if wanted not in DECODERS:
        raise BundleError(f"decoder must be one of {', '.join(DECODERS)}, got {wanted!r}")
    standard = DecoderChoice("standard", decoder_file, bundle_dtype)
    fused = {d: r for d, r in (fused_decoders or {}).items() if not is_legacy(r)}
    legacy = sorted(d for d, r in (fused_decoders or {}).items() if is_legacy(r))
    tensorrt = providers[0] == "TensorrtExecutionProvider"
    if wanted == "standard" or (wanted == "auto" and (tensorrt or bundle_dtype not in fused
                                                      or _cpu_attention_on_cuda(fused[bundle_dtype], providers))):
        return standard
    if tensorrt:
        raise ProviderError("the fused decoder uses ONNX Runtime's com.microsoft ops, which TensorRT's parser does "
                            "not read; load it with providers=['cuda'] or ['cpu'], or use decoder='standard'")
    if wanted in ("auto", "fused"):
        dtype = bundle_dtype if bundle_dtype in fused else next(iter(sorted(fused or legacy, key=_fp32_first)), None)
    else:
        dtype = wanted.split("-")[1]
    if dtype not in fused:
        if dtype in legacy:
            raise BundleError(f"decoder={wanted!r}: the bundle's fused {dtype} decoder was built by an earlier version "
                              f"(one graph, no shared KV buffer); rebuild it with: just fuse BUNDLE --dtype {dtype}")
        have = ", ".join(f"fused-{d}" for d in sorted(fused)) or "none"
        raise BundleError(f"decoder={wanted!r}: the bundle has no such fused decoder (fused decoders: {have}); "
                          f"build one with: just fuse BUNDLE --dtype {dtype or bundle_dtype}")
    record = fused[dtype]           # file names checked with the manifest
    return DecoderChoice("fused", record["plain"], dtype, record["steered"])


def is_legacy(record) -> bool:
    """A fused record of the earlier one-graph layout."""
    return isinstance(record, dict) and "file" in record and "plain" not in record


def _cpu_attention_on_cuda(record, providers: list[str]) -> bool:
    """Whether this fused decoder's attention would leave the GPU: fp32 GroupQueryAttention on CUDA."""
    return (providers[0] == "CUDAExecutionProvider" and isinstance(record, dict)
            and record.get("dtype") == "fp32" and record.get("attention_op") == "GroupQueryAttention")


def _fp32_first(dtype: str) -> int:
    return 0 if dtype == "fp32" else 1
