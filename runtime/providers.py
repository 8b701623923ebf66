"""Execution providers by short name; never a silent fallback unless asked for."""
from __future__ import annotations

import warnings
from pathlib import Path

import onnxruntime as ort

from .engine_layout import EngineError, builds_in, no_engines_message, select_engines
from . import engine_target
from .errors import BundleError, ProviderError

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


def tensorrt_engines(folder: Path, manifest_sha256: tuple[str, ...], providers: list[str]):
    """The bundle's prebuilt TensorRT engines for this machine (``runtime.engine_layout.EngineSet``), or None.

    Only looked at when TensorRT is the first provider; only then are ``tensorrt`` (if installed),
    libnvinfer and libcuda touched (``runtime.engine_target`` probes only when called).  A bundle without engines warns
    that ONNX Runtime will build its own; engines for another TensorRT or GPU, or from an earlier
    export, raise BundleError naming both and the command that rebuilds.
    """
    if providers[0] != "TensorrtExecutionProvider":
        return None
    try:
        target = engine_target.local_target()
    except engine_target.TargetUnavailable as e:
        if builds_in(folder):
            raise ProviderError(f"{folder} has prebuilt TensorRT engines, but this machine's TensorRT or GPU "
                                f"cannot be identified: {e}") from None
        warnings.warn(no_engines_message(folder, None), RuntimeWarning, stacklevel=4)
        return None
    try:
        chosen = select_engines(folder, target, manifest_sha256)
    except EngineError as e:
        raise BundleError(str(e)) from None
    if chosen is None:
        warnings.warn(no_engines_message(folder, target), RuntimeWarning, stacklevel=4)
    return chosen
