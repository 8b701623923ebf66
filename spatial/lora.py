"""A low-rank adapter on the decoder's attention projections, merged into the weights at assembly.

    y = W x + (alpha / rank) * B (A x)        A: [rank, in] (small random), B: [out, rank] (zeros)

B starts at zero, so training starts from SmolLM2 exactly.  Merged: W' = W + (alpha / rank) B A.
"""
from __future__ import annotations

import torch
from torch import nn

from .architecture import LoraShape


class LoraLinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.base = base
        self.scale = alpha / rank
        self.A = nn.Parameter(torch.randn(rank, base.in_features) / base.in_features ** 0.5)   # [r, in]
        self.B = nn.Parameter(torch.zeros(base.out_features, rank))                            # [out, r]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.A.T @ self.B.T) * self.scale


def attach(layers: nn.ModuleList, shape: LoraShape) -> dict[str, LoraLinear]:
    """Wrap the target projections of every layer; returns {"layers.{i}.self_attn.{name}": adapter}."""
    adapters = {}
    for i, layer in enumerate(layers):
        for name in shape.targets:
            base = getattr(layer.self_attn, name)
            adapter = LoraLinear(base, shape.rank, shape.alpha)
            setattr(layer.self_attn, name, adapter)
            adapters[f"layers.{i}.self_attn.{name}"] = adapter
    return adapters


def adapter_tensors(adapters: dict[str, LoraLinear]) -> dict[str, torch.Tensor]:
    out = {}
    for key, a in adapters.items():
        out[f"lora.{key}.A"] = a.A.detach().clone()
        out[f"lora.{key}.B"] = a.B.detach().clone()
    return out


@torch.no_grad()
def merge_into(language_model: nn.Module, tensors: dict[str, torch.Tensor], shape: LoraShape) -> int:
    """W += (alpha / rank) B A for every adapter in ``tensors``; returns how many were merged."""
    scale = shape.alpha / shape.rank
    merged = 0
    for key in sorted(k[len("lora."):-len(".A")] for k in tensors if k.startswith("lora.") and k.endswith(".A")):
        linear = language_model.get_submodule(key)
        linear.weight += scale * (tensors[f"lora.{key}.B"] @ tensors[f"lora.{key}.A"])   # [out, in]
        merged += 1
    return merged
