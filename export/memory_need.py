"""An export's dtype by default, and its expected peak memory: said before it starts, refused where it cannot fit.

The default dtype is the checkpoint's own (its config's ``torch_dtype``, or ``dtype`` in newer
configs): fp16 for ``llava-hf/llava-1.5-7b-hf``, fp32 for an fp32 checkpoint; anything else
(bfloat16, unset) exports in fp32 unless told otherwise (bfloat16's range does not fit in fp16).

The expected peak, from the checkpoint's safetensors headers and its config (nothing is loaded):

    weights       every parameter in the export dtype (an fp16 checkpoint exported in fp16 is mapped
                  from its files; an fp32 export of it is a converted copy)
    one block     the parity reference's widened layer beside them: fp16, the largest layer and the
                  LM head in float32; fp32, the largest layer in float64 (the tolerances' run)
    cache         the reference's K/V in float32: a prompt's worth kept per parity case (export/parity.py
                  keeps each step's new positions only), and two more while a step runs (the cache it
                  carries and the one it makes)
    activations   a prompt's attention scores, four copies in float32
    BASE_BYTES    Python, torch, ONNX Runtime and the allocator's slack

Measured peaks sit at or below it (docs/memory.md: LLaVA-1.5-7B's shapes in fp16, 17.52 GB against
18.5 GB).  Where MemAvailable is less, the export stops at once with an
``InsufficientMemoryError`` that names both numbers and, for fp32, what fp16 would need.
"""
from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from .errors import ExportError
from runtime.host_memory import available_bytes

BASE_BYTES = 1_000_000_000
_GB = 1e9
_ITEMSIZE = {"fp16": 2, "fp32": 4}
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")
_TEXT_LAYER = re.compile(r"language_model\.(?:model\.)?layers\.(\d+)\.")
_FP16_NAMES = ("float16", "fp16", "half")
_FP32_NAMES = ("float32", "fp32", "float")


class InsufficientMemoryError(ExportError):
    """The export would need more memory than the machine has available."""


@dataclass(frozen=True)
class MemoryNeed:
    dtype: str
    peak_bytes: int
    weights_bytes: int
    block_bytes: int
    cache_bytes: int
    activation_bytes: int

    def describe(self) -> str:
        return (f"about {self.peak_bytes / _GB:.1f} GB at its peak in {self.dtype} ({self.weights_bytes / _GB:.1f} GB "
                f"of weights, {self.block_bytes / _GB:.1f} GB for the reference's widened layer, "
                f"{(self.cache_bytes + self.activation_bytes) / _GB:.1f} GB of reference cache and activations, "
                f"{BASE_BYTES / _GB:.0f} GB for the runtime)")


def checkpoint_dtype(folder: Path) -> str | None:
    """"fp16" or "fp32" as the checkpoint's config states it (``torch_dtype`` or ``dtype``), else None."""
    config = json.loads((Path(folder) / "config.json").read_text())
    for where in (config, config.get("text_config") or {}):
        for key in ("torch_dtype", "dtype"):
            value = str(where.get(key) or "").removeprefix("torch.")
            if value in _FP16_NAMES:
                return "fp16"
            if value in _FP32_NAMES:
                return "fp32"
            if value:
                return None
    return None


def default_dtype(folder: Path) -> str:
    """The export dtype when none is given: the checkpoint's own, fp32 where it is neither fp16 nor fp32."""
    return checkpoint_dtype(folder) or "fp32"


def _tensor_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    """{name: shape} from the safetensors files' headers (the files are not read beyond them)."""
    shapes = {}
    for path in sorted(Path(folder).glob("*.safetensors")):
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        shapes.update({name: tuple(entry["shape"]) for name, entry in header.items() if name != "__metadata__"})
    return shapes


def _count(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def parameter_count(folder: Path) -> int:
    """The checkpoint's parameters, from its safetensors headers (0 where it has none)."""
    return sum(_count(s) for s in _tensor_shapes(folder).values())


def expected_peak(folder: Path, dtype: str, cases: int) -> MemoryNeed:
    """The export's expected peak resident memory (see the module docstring); ``cases``: parity cases run."""
    folder = Path(folder)
    shapes = _tensor_shapes(folder)
    config = json.loads((folder / "config.json").read_text())
    text, vision = config.get("text_config") or {}, config.get("vision_config") or {}
    total = sum(_count(s) for s in shapes.values())
    layers: dict[str, int] = {}
    for name, shape in shapes.items():
        found = _TEXT_LAYER.search(name) or _LAYER.search(name)
        if found:
            key = ("text" if _TEXT_LAYER.search(name) else "vision") + found.group(1)
            layers[key] = layers.get(key, 0) + _count(shape)
    largest = max(layers.values(), default=0)
    head = sum(_count(s) for name, s in shapes.items() if name.endswith("lm_head.weight"))
    block = 4 * (largest + head) if dtype == "fp16" else 8 * largest
    hidden = text.get("hidden_size", 4096)
    heads = text.get("num_attention_heads", 32)
    head_dim = text.get("head_dim") or hidden // heads
    patches = (vision.get("image_size", 336) // vision.get("patch_size", 14)) ** 2
    prompt = patches + 16                   # the image tokens and the parity prompt's text around them
    kv = text.get("num_key_value_heads") or heads
    cache = (cases + 2) * prompt * 2 * text.get("num_hidden_layers", 32) * kv * head_dim * 4
    activations = 4 * heads * prompt * prompt * 4
    weights = total * _ITEMSIZE[dtype]
    return MemoryNeed(dtype, weights + block + cache + activations + BASE_BYTES, weights, block, cache, activations)


def check_memory(folder: Path, dtype: str, cases: int, log=None, available: int | None = None) -> MemoryNeed:
    """States the expected peak (``log``) and raises InsufficientMemoryError where more than ``available``
    (default: MemAvailable now; unknown off Linux: not checked)."""
    need = expected_peak(folder, dtype, cases)
    available = available_bytes() if available is None else available
    if log:
        log(f"this export needs {need.describe()}"
            + (f"; {available / _GB:.1f} GB available" if available is not None else ""))
    if available is not None and need.peak_bytes > available:
        message = (f"this export needs {need.describe()}, and this machine has {available / _GB:.1f} GB "
                   f"available (MemAvailable)")
        if dtype == "fp32":
            half = expected_peak(folder, "fp16", cases)
            fits = "fits" if half.peak_bytes <= available else "does not fit either"
            message += (f"; an fp16 export (--dtype fp16) needs about {half.peak_bytes / _GB:.1f} GB, "
                        f"which {fits}")
        else:
            message += "; free memory, or export on a machine with more"
        raise InsufficientMemoryError(message)
    return need
