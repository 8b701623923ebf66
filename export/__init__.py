"""Export LLaVA checkpoints into ONNX bundles with an image-attention temperature input.

    from export import export_llava
    export_llava("llava-hf/llava-1.5-7b-hf", "bundles/llava-1.5-7b")
    export_llava("llava-hf/llava-1.5-7b-hf", "bundles/llava-fp16", ExportSettings(dtype="fp16", atol=0.1))
"""
from .bundle import export_llava
from .settings import ExportSettings

__all__ = ["ExportSettings", "export_llava"]
