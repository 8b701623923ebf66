"""A lightweight runtime for LLaVA, Qwen2.5-VL and Qwen3-VL bundles with AdaptVis image-attention steering.

    import runtime
    vlm = runtime.load("bundles/llava-1.5-7b", providers=["cpu"])
    ans = vlm.answer(image, "Where is the mug in relation to the plate?")
    ans = vlm.answer(image, question, steering=runtime.ScalingVis(1.2))

Needs numpy, onnxruntime, tokenizers and Pillow only: never torch or transformers.
"""
from __future__ import annotations

import threading
from pathlib import Path

from . import errors
from .answer import Answer, AttentionMaps, ImageInfluence, Timings
from .model import VLM
from .steering import PAPER_DEFAULT, AdaptVis, ScalingVis

__all__ = ["load", "answer", "VLM", "Answer", "AdaptVis", "ScalingVis", "Timings", "ImageInfluence",
           "AttentionMaps", "PAPER_DEFAULT", "errors"]

_loaded: dict[tuple, VLM] = {}
_loaded_lock = threading.Lock()


def load(bundle: str | Path, providers=("cpu",), fallback: bool = False, verify_checksums: bool = True,
         threads: int | None = None, decoder: str = "auto", cuda_graph: bool = False) -> VLM:
    """Open a bundle folder on the given execution providers ("cpu", "cuda", "tensorrt").

    ``decoder``: "auto" (the bundle's fused decoder on CPU/CUDA when it has one, else the standard one),
    "standard", "fused", "fused-fp32" or "fused-fp16" (``runtime/decoders.py``).  ``cuda_graph``: on CUDA with
    the fused pair, capture each KV buffer set's decode step once and replay it (``runtime/fused_decoder.py``;
    off by default: not yet measured on a GPU)."""
    return VLM(bundle, providers=providers, fallback=fallback, verify_checksums=verify_checksums, threads=threads,
               decoder=decoder, cuda_graph=cuda_graph)


def answer(image, question: str, bundle: str | Path, providers=("cpu",), **kwargs) -> Answer:
    """Module-level shortcut: loads ``bundle`` once per (folder, providers), then answers."""
    key = (str(Path(bundle).expanduser().resolve()), tuple(providers) if not isinstance(providers, str) else (providers,))
    with _loaded_lock:
        vlm = _loaded.get(key)
        if vlm is None:
            vlm = _loaded[key] = load(bundle, providers=providers)
    return vlm.answer(image, question, **kwargs)
