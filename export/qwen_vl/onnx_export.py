"""torch.onnx.export (TorchScript, opset >= 17) of the three Qwen wrappers, with trace-time inputs.

The vision graph is traced on one grid with several windows and frames of one; every index tensor
is an input, so the graph serves any grid.  The decoder is traced with a past (P > 0 keeps the
cache Concat) and S > 1; both axes stay symbolic.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from graphs.qwen_vl_contracts import QwenGraphContract
from runtime.qwen_vl.vision_feeds import VisionSpec, vision_feeds

# Trace-time sizes: any value > 1 keeps an axis symbolic; a past > 0 keeps the Concat alive.
_TRACE_GRID = (1, 8, 12)
_BATCH, _SEQ, _PAST = 1, 5, 7
DEFAULT_OPSET = 17


def export_graph(module: torch.nn.Module, args: tuple, contract: QwenGraphContract, path: Path,
                 opset: int = DEFAULT_OPSET) -> None:
    axes = {t.name: t.dynamic_axes() for t in (*contract.inputs, *contract.outputs) if t.dynamic_axes()}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(module, args, str(path), input_names=contract.input_names,
                          output_names=contract.output_names, dynamic_axes=axes, opset_version=opset,
                          dynamo=False, do_constant_folding=True)


def vision_trace_inputs(model, spec: VisionSpec) -> tuple:
    v = model.config.vision_config
    t, h, w = _TRACE_GRID
    dim = v.in_channels * v.temporal_patch_size * v.patch_size ** 2
    pixels = np.random.default_rng(0).standard_normal((t * h * w, dim)).astype(np.float32)   # [N, CTPP]
    feeds = vision_feeds(pixels, _TRACE_GRID, spec)
    return tuple(torch.from_numpy(np.ascontiguousarray(x)) for x in feeds.values())


def embed_trace_inputs(model) -> tuple:
    vocab = model.config.text_config.vocab_size
    return (torch.randint(0, vocab, (_BATCH, _SEQ), dtype=torch.int64),)


def decoder_trace_inputs(model, deepstack: int) -> tuple:
    c = model.config.text_config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    total = _PAST + _SEQ
    past = [torch.randn(_BATCH, c.num_key_value_heads, _PAST, head_dim) for _ in range(2 * c.num_hidden_layers)]
    image_mask = torch.zeros(_BATCH, total, dtype=torch.bool)
    image_mask[:, 1:4] = True
    positions = torch.arange(_PAST, total, dtype=torch.int64)[None, None].expand(3, _BATCH, -1).contiguous()
    args = [torch.randn(_BATCH, _SEQ, c.hidden_size), torch.ones(_BATCH, total, dtype=torch.int64), positions,
            *past, torch.full((_BATCH, c.num_hidden_layers, c.num_attention_heads), 1.5), image_mask]
    if deepstack:
        args.append(torch.randn(deepstack, _BATCH, _SEQ, c.hidden_size))
    return tuple(args)
