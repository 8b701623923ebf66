"""An fp16 part run as PyTorch runs it in fp16, its weight products through the float32 GEMM.

The fp16 export's tolerances come from the model's own fp16 rounding (``export/tolerance.py``):
the same part, in fp16, against the fp32 reference on the same inputs.  PyTorch's CPU fp16 matrix
product runs ~5x slower than its float32 one on a CPU without fp16 arithmetic (AVX2, 2 cores: 24 vs
126 GFLOP/s), which would make a 7B prefill take ~6 min.  Here every ``nn.Linear`` of the part computes

    y = fp16( float32(x) @ float32(W)^T + b )        x [.., in] fp16, W [out, in] fp16 -> y [.., out] fp16

fp16 operands, float32 accumulation, one rounding of the result: what a GPU's fp16 GEMM and ONNX
Runtime's fp16 MatMul on an x86 CPU (cast to float32) compute, with the float32 kernel.  PyTorch's own
CPU fp16 kernel gives the same results but for 0.2 % of them, by up to 4 fp16 ulps (590 x 4096 x 4096).
``W``'s float32 copy goes into a buffer kept per shape.  Everything else (norms, rotary, the attention
products, softmax) runs in PyTorch's own fp16 ops.
"""
from __future__ import annotations

import contextlib

import torch
from torch.nn import functional as F


@contextlib.contextmanager
def fp16_run(part: torch.nn.Module):
    """``part`` (fp16 weights) as PyTorch fp16, each Linear through the float32 GEMM (module docstring)."""
    linears = [m for m in part.modules() if isinstance(m, torch.nn.Linear)]
    wide: dict[tuple, torch.Tensor] = {}            # shape -> a float32 buffer for W

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float16 or self.weight.dtype != torch.float16:
            return F.linear(x, self.weight, self.bias)
        w = wide.get(tuple(self.weight.shape))
        if w is None:
            w = wide[tuple(self.weight.shape)] = torch.empty(self.weight.shape, dtype=torch.float32)
        w.copy_(self.weight)                                            # [out, in] float32, exact
        bias = None if self.bias is None else self.bias.float()
        return F.linear(x.float(), w, bias).to(torch.float16)           # [.., out] rounded once

    own = {id(m): m.__dict__["forward"] for m in linears if "forward" in m.__dict__}
    for m in linears:
        m.forward = forward.__get__(m)
    try:
        yield part
    finally:
        for m in linears:
            if id(m) in own:
                m.forward = own[id(m)]
            else:
                del m.forward
