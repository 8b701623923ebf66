"""The Qwen2.5-VL / Qwen3-VL vision tower as a graph with no data-dependent control flow.

transformers' tower computes its index tensors from ``grid_thw`` in Python and splits attention
by ``cu_seqlens.tolist()``: neither traces into a graph that serves other grids.  Here they are
inputs (``runtime/qwen_vl/vision_feeds.py`` computes them in numpy) and attention segments become
additive block-diagonal masks built in the graph from per-patch segment ids:

    pixel_values [N, C*T*P*P] --patch_embed--> h [N, C]
        (Qwen3-VL)  + sum_k table[position_indices[k]] * position_weights[k]       [N, C]
        (Qwen2.5-VL) h, angles reordered by window_index (in merge units)           [N, C]
    angles = rotary_positions * inv_freq -> cos, sin [N, head_dim]
    mask_full   = 0 where frame_segments[i] == frame_segments[j], else finfo.min    [N, N]
    mask_window = 0 where window_segments[i] == window_segments[j], else finfo.min  [N, N]
    blocks: h += attn(norm1(h), mask of the block); h += mlp(norm2(h))
        (Qwen3-VL) after block deepstack_visual_indexes[k]: deepstack_k = merger_k(h) [N/m^2, hidden]
    merger(h) [N/m^2, hidden]; (Qwen2.5-VL) rows put back by window_reverse

A masked softmax over one segment equals transformers' per-segment softmax (exp(finfo.min - max) = 0).
The arithmetic keeps float64 in a float64 run (the tolerance's second run).
"""
from __future__ import annotations

import torch
from torch import nn

from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import rotate_half


class QwenVision(nn.Module):
    """Wraps ``model.visual`` (weights shared); inputs and outputs as ``graphs.qwen_vl_contracts.vision_contract``."""

    def __init__(self, model):
        super().__init__()
        visual = model.model.visual
        self.visual = visual
        self.window = hasattr(visual, "fullatt_block_indexes")
        self.deepstack = list(getattr(visual, "deepstack_visual_indexes", []) or [])
        self.full_blocks = set(visual.fullatt_block_indexes) if self.window else None
        self.unit = visual.spatial_merge_unit
        # each block called as a module of its own list: the float64 run upcasts one block per call
        self.blocks = nn.ModuleList(_Block(b) for b in visual.blocks)

    def forward(self, pixel_values, rotary_positions, frame_segments, *rest):
        # pixel_values [N, CTPP]; rotary_positions [N, 2] int64; frame_segments [N] int64
        v = self.visual
        h = v.patch_embed(pixel_values)                                       # [N, C]
        if self.window:
            window_index, window_reverse, window_segments = rest
        else:
            position_indices, position_weights = rest                         # [4, N] each
            table = v.pos_embed.weight                                        # [g*g, C]
            pe = table[position_indices] * position_weights[:, :, None].to(h.dtype)   # [4, N, C]
            h = h + (pe[0] + pe[1] + pe[2] + pe[3])
        angles = (rotary_positions[:, :, None].to(h.dtype if h.dtype == torch.float64 else torch.float32)
                  * v.rotary_pos_emb.inv_freq.to(h.dtype if h.dtype == torch.float64 else torch.float32))
        angles = angles.flatten(1)                                             # [N, head_dim / 2]
        if self.window:
            h = _gather_units(h, window_index, self.unit)                      # [N, C], window order
            angles = _gather_units(angles, window_index, self.unit)            # [N, head_dim / 2]
        emb = torch.cat((angles, angles), dim=-1)                              # [N, head_dim]
        cos, sin = emb.cos(), emb.sin()
        full = _segment_mask(frame_segments, h.dtype)                          # [1, 1, N, N]
        windowed = _segment_mask(window_segments, h.dtype) if self.window else None
        deepstack = []
        for i, block in enumerate(self.blocks):
            h = block(h, cos, sin, full if (not self.window or i in self.full_blocks) else windowed)   # [N, C]
            if i in self.deepstack:
                deepstack.append(v.deepstack_merger_list[self.deepstack.index(i)](h))   # [N/m^2, hidden]
        out = v.merger(h)                                                      # [N/m^2, hidden]
        if self.window:
            out = out[window_reverse]                                          # merge-block order again
        if self.deepstack:
            return out, torch.stack(deepstack)                                 # [D, N/m^2, hidden]
        return out


class _Block(nn.Module):
    """One tower block with its attention over a masked call (transformers' block splits by segment)."""

    def __init__(self, block):
        super().__init__()
        self.block = block

    def forward(self, h, cos, sin, mask):
        b = self.block
        h = h + _attention(b.attn, b.norm1(h), cos, sin, mask)                # [N, C]
        return h + b.mlp(b.norm2(h))


def _gather_units(x, index, unit: int):
    """Rows of ``x [N, F]`` regrouped by merge unit: ``x.view(N/unit, unit, F)[index]`` -> [N, F]."""
    return x.reshape(-1, unit, x.shape[-1])[index].reshape(-1, x.shape[-1])


def _segment_mask(segments, dtype):
    """segments [N] -> additive [1, 1, N, N]: 0 within a segment, the dtype's minimum across."""
    same = segments[:, None] == segments[None, :]                              # [N, N]
    blocked = torch.tensor(torch.finfo(dtype).min, dtype=dtype)
    return torch.where(same, torch.zeros((), dtype=dtype), blocked)[None, None]


def _attention(attn, x, cos, sin, mask):
    """transformers' vision attention on one masked call: x [N, C] -> [N, C]."""
    n = x.shape[0]
    q, k, v = attn.qkv(x).reshape(n, 3, attn.num_heads, -1).permute(1, 0, 2, 3).unbind(0)   # [N, H, d] each
    wide = x.dtype if x.dtype == torch.float64 else torch.float32
    c, s = cos.unsqueeze(-2).to(wide), sin.unsqueeze(-2).to(wide)              # [N, 1, d]
    q = (q.to(wide) * c + rotate_half(q.to(wide)) * s).to(x.dtype)
    k = (k.to(wide) * c + rotate_half(k.to(wide)) * s).to(x.dtype)
    q, k, v = (t.transpose(0, 1)[None] for t in (q, k, v))                     # [1, H, N, d]
    scores = torch.matmul(q, k.transpose(2, 3)) * attn.scaling + mask          # [1, H, N, N]
    probs = torch.softmax(scores.to(wide), dim=-1).to(x.dtype)
    out = torch.matmul(probs, v)                                               # [1, H, N, d]
    return attn.proj(out.transpose(1, 2).reshape(n, -1))                       # [N, C]
