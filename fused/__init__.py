"""The fused decoder pair: a Llama decoder written with ONNX Runtime's contrib ops for its CPU and CUDA providers.

    python -m fused BUNDLE [--dtype fp32|fp16] [--checkpoint DIR]
        # adds decoder_plain_<dtype>.onnx + decoder_steered_<dtype>.onnx (one weights file) to BUNDLE

The plain graph decodes (10 nodes a layer, the KV cache in one shared buffer per layer); the steered
graph runs AdaptVis's steered rows and the attention read-outs.  The bundle's standard
``decoder.onnx`` stays (TensorRT, and the reference the pair is checked against before it is
recorded in ``manifest.json``'s ``fused_decoders``).  ``just export`` writes the pair by default.
"""
from __future__ import annotations

from .bundle import fuse_bundle
from .errors import FuseError, FusedMemoryError, FusedParityError, UnsupportedDecoderError

__all__ = ["fuse_bundle", "FuseError", "FusedMemoryError", "FusedParityError", "UnsupportedDecoderError"]
