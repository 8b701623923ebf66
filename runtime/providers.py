"""Execution providers by short name; never a silent fallback unless asked for."""
from __future__ import annotations

import warnings

import onnxruntime as ort

from .errors import ProviderError

PROVIDER_NAMES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


def resolve_providers(requested: list[str] | tuple[str, ...] | str, fallback: bool = False) -> list[str]:
    """Short or full names -> ORT provider names, in order; raises ProviderError for unknown/unavailable ones."""
    if isinstance(requested, str):
        requested = [requested]
    if not requested:
        raise ProviderError("no execution provider requested; use e.g. providers=['cpu']")
    available = ort.get_available_providers()
    chosen = []
    for name in requested:
        full = PROVIDER_NAMES.get(str(name).lower(), name)
        if full not in PROVIDER_NAMES.values():
            raise ProviderError(f"unknown provider {name!r}; known: {', '.join(PROVIDER_NAMES)}")
        if full not in available:
            message = (f"requested provider {name!r} ({full}), but available on this machine are "
                       f"{', '.join(available)}")
            if not fallback:
                raise ProviderError(message + " (pass fallback=True to use the next available one)")
            warnings.warn(message + "; falling back", RuntimeWarning, stacklevel=3)
            continue
        chosen.append(full)
    if not chosen:
        chosen = ["CPUExecutionProvider"]
    return chosen


def device_of(providers: list[str]) -> str:
    """Where the KV cache lives between steps: on the GPU for CUDA/TensorRT, else in host memory."""
    return "cuda" if providers[0] in ("CUDAExecutionProvider", "TensorrtExecutionProvider") else "cpu"
