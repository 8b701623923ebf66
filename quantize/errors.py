"""Exceptions the quantizer raises for caller mistakes; every one leaves no bundle behind."""
from __future__ import annotations


class QuantizeError(RuntimeError):
    """Base class: the quantization stopped, the source is untouched and nothing was written."""


class OptionError(QuantizeError):
    """A setting is not one this quantizer offers (precision, block size, accuracy level ...)."""


class SourceBundleError(QuantizeError):
    """The source is not a complete, intact fp32 bundle (missing, damaged, or of another dtype)."""


class AlreadyQuantizedError(SourceBundleError):
    """The source bundle is itself the output of a quantization."""
