"""The model families the runtime knows, one module each, and ``detect_family`` for a checkpoint's config.

A family says, as data read where it is used: how the decoder's positions are made
(``positions``), how an image becomes the vision graph's input (``preprocessing``), and how the
image's tokens sit in the prompt (``image_layout``).  No ``if family == ...`` elsewhere.
"""
from __future__ import annotations

from runtime.errors import BundleError

from .family import Family
from .llava import LLAVA
from .qwen2_5_vl import QWEN2_5_VL
from .qwen3_vl import QWEN3_VL

FAMILIES: dict[str, Family] = {f.model_type: f for f in (LLAVA, QWEN2_5_VL, QWEN3_VL)}


class UnsupportedFamilyError(BundleError):
    """A checkpoint whose ``model_type`` is none of the supported families."""


def detect_family(config: dict) -> Family:
    """The family of a checkpoint's ``config.json`` (a dict), by its ``model_type``."""
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type not in FAMILIES:
        supported = ", ".join(f"{f.model_type} ({f.name})" for f in FAMILIES.values())
        raise UnsupportedFamilyError(f"checkpoint model_type {model_type!r} is not supported; "
                                     f"supported families: {supported}")
    return FAMILIES[model_type]


__all__ = ["FAMILIES", "LLAVA", "QWEN2_5_VL", "QWEN3_VL", "Family", "UnsupportedFamilyError", "detect_family"]
