"""Qwen2.5-VL and Qwen3-VL in numpy: the image processor, M-RoPE positions and the vision tower's grid indices.

    image.py         PIL image -> flattened patches [N, C*T*P*P] and grid (t, h, w)
    positions.py     prompt ids + grids -> position_ids [3, B, S] and the rope delta for decode steps
    rope.py          M-RoPE's frequency -> axis map (chunked or interleaved sections) and cos/sin
    vision_index.py  grid -> 2-D rotary positions, attention segments, window order, position-table weights
    layout.py        the image's token span in a prompt: <|vision_start|> <|image_pad|> x n <|vision_end|>

Each is matched to transformers' own computation by tests/runtime/qwen_vl/.
"""
