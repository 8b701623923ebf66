"""The fused decoder: a Llama decoder written with ONNX Runtime's contrib ops for its CPU and CUDA providers.

    python -m fused BUNDLE [--dtype fp32|fp16] [--checkpoint DIR]   # adds decoder_fused_<dtype>.onnx to BUNDLE

Same inputs and outputs as the bundle's standard ``decoder.onnx`` (which stays, for TensorRT);
checked against it before it is recorded in ``manifest.json`` (``fused_decoders``).
"""
from __future__ import annotations

from .bundle import fuse_bundle
from .errors import FuseError, FusedParityError, UnsupportedDecoderError

__all__ = ["fuse_bundle", "FuseError", "FusedParityError", "UnsupportedDecoderError"]
