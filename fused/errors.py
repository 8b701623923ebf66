"""Exceptions the fused-decoder builder raises for caller mistakes and failed checks."""
from __future__ import annotations


class FuseError(RuntimeError):
    """The fused decoder was not built (nothing in the bundle changed)."""


class UnsupportedDecoderError(FuseError):
    """The checkpoint's decoder has a feature the fused graph does not build (biases, another activation...)."""


class FusedParityError(FuseError):
    """The fused decoder's outputs differ from the bundle's standard decoder beyond the tolerance."""


class FusedMemoryError(FuseError):
    """The pair's check would need more memory than the machine has available (nothing was built)."""
