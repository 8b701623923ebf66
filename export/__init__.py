"""Export LLaVA checkpoints into ONNX bundles with an image-attention temperature input.

    from export import export_llava
    export_llava("llava-hf/llava-1.5-7b-hf", "bundles/llava-1.5-7b")
"""
from .bundle import export_llava

__all__ = ["export_llava"]
