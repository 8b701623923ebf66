"""Qwen2.5-VL and Qwen3-VL in numpy: what ``runtime.load`` calls for a Qwen bundle, and the pieces under it.

    image.py         PIL image -> flattened patches [N, C*T*P*P] and grid (t, h, w)
    positions.py     prompt ids + grids -> position_ids [3, B, S] and the rope delta for decode steps
    rope.py          M-RoPE's frequency -> axis map (chunked or interleaved sections) and cos/sin
    vision_index.py  grid -> 2-D rotary positions, attention segments, window order, position-table weights
    vision_feeds.py  patches + grid -> the vision graph's feeds
    layout.py        the image's token span in a prompt (<|vision_start|> <|image_pad|> x n <|vision_end|>) and
                     ``GridLayout``: the prompt's ids and M-RoPE positions for ``runtime.prompt.PromptBuilder``
    image_input.py   ``QwenImages``: an image -> its feeds, cache key, token count and merged grid
    sessions.py      ``QwenSessions``: the bundle's graphs, bound by role, on either decoder
    answer.py, fused_decoder.py   the graphs called one by one (the export's checks drive them)

Each numeric piece is matched to transformers' own computation by tests/runtime/qwen_vl/.
"""
