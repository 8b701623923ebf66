"""Qwen3-VL: dynamic resolution, DeepStack features, M-RoPE with interleaved sections, QK-norm."""
from .family import Family

QWEN3_VL = Family("qwen3_vl", "Qwen3-VL", "Qwen3VLForConditionalGeneration", positions="mrope",
                  mrope_interleaved=True, preprocessing="qwen-patches", image_layout="per-grid", deepstack=True,
                  fused_after_export=False, tensorrt_engines=False)
