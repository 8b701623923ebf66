"""One model family's differences, as data."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    model_type: str          # config.json's model_type
    name: str                # for people
    architecture: str        # the transformers class an export loads
    positions: str           # "1d": position_ids [B, S]; "mrope": [3, B, S] (runtime.qwen_vl.positions)
    mrope_interleaved: bool  # mrope only: sections interleaved (Qwen3-VL) or chunked (Qwen2.5-VL)
    preprocessing: str       # "clip": fixed-size pixel_values [1, 3, H, W]; "qwen-patches": [N, C*T*P*P] + grid
    image_layout: str        # "fixed": one placeholder -> a fixed count; "per-grid": t*h*w / merge^2 tokens,
                             # between <|vision_start|> and <|vision_end|>
    deepstack: bool = False  # vision features also added to the first decoder layers' outputs
    window_attention: bool = False   # vision tower: windowed blocks besides full-attention ones
    fused_after_export: bool = True  # `just fuse` adds the fused pair to an exported bundle (else: built at export)
    tensorrt_engines: bool = True    # `just engines` prebuilds TensorRT engines for its bundles
