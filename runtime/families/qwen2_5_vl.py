"""Qwen2.5-VL: dynamic resolution, window attention in the tower, M-RoPE with chunked sections."""
from .family import Family

QWEN2_5_VL = Family("qwen2_5_vl", "Qwen2.5-VL", "Qwen2_5_VLForConditionalGeneration", positions="mrope",
                    mrope_interleaved=False, preprocessing="qwen-patches", image_layout="per-grid",
                    window_attention=True, fused_after_export=False, tensorrt_engines=False)
