"""Tensor names by role, from the manifest's IO spec, and each session checked against that spec at load.

    manifest io[file] --role--> name         "image_attention_scale" -> whatever the graph calls it
    session inputs/outputs  ==  io[file]     names, dtypes and ranks; else IOSpecError, before any answer

A manifest written before its ``io`` field is bound by the names of ``graphs.contracts`` (those every
earlier export wrote): ``Bundle.io``.  A graph whose spec lacks a role its contract needs is a
``BundleError`` naming it (a decoder without the steering inputs is not a bundle of ours).
"""
from __future__ import annotations

from dataclasses import dataclass

import onnxruntime as ort

from graphs.contracts import (IMAGE_ATTENTION_SCALE, IMAGE_ATTENTION_SHARE, IMAGE_TOKEN_MASK, LAST_ROW_ATTENTION,
                              STEERING_INPUTS, GraphContract)
from graphs.io_spec import GraphIO

from .errors import BundleError, IOSpecError

MROPE_POSITION_IDS = "mrope_position_ids"      # the Qwen decoders' role for position_ids [3, B, S]
DEEPSTACK_EMBEDS = "deepstack_embeds"          # the Qwen3-VL decoders' role for the DeepStack rows

# ONNX Runtime's type strings -> the manifest's numpy dtype names
_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64",
              "tensor(int32)": "int32", "tensor(bool)": "bool"}


@dataclass(frozen=True)
class DecoderNames:
    """What one decoder graph (standard, plain or steered) calls each tensor the runtime binds."""

    inputs_embeds: str
    attention_mask: str
    position_ids: str | None    # 1-D [1, S] or M-RoPE [3, 1, S]; None: the graph counts positions itself (LLaVA's pair)
    logits: str
    past: tuple[str, ...]       # 2L: key then value of each layer, the KV cache's order
    present: tuple[str, ...]
    scale: str | None           # the steering inputs (None: the plain graph has none)
    image_mask: str | None
    last_row: str | None        # the attention outputs (None: the plain graph, or an export before them)
    image_share: str | None
    deepstack: str | None = None    # Qwen3-VL: vision features added after the first decoder layers [D, 1, S, C]

    @classmethod
    def of(cls, io: GraphIO, num_layers: int) -> "DecoderNames":
        def get(role):
            return io.name(role) if io.has(role) else None

        def kv(kind):
            return tuple(io.name(f"{kind}_{part}.{i}") for i in range(num_layers) for part in ("key", "value"))
        return cls(io.name("inputs_embeds"), io.name("attention_mask"), get("position_ids") or get(MROPE_POSITION_IDS),
                   io.name("logits"), kv("past"), kv("present"), get(IMAGE_ATTENTION_SCALE), get(IMAGE_TOKEN_MASK),
                   get(LAST_ROW_ATTENTION), get(IMAGE_ATTENTION_SHARE), get(DEEPSTACK_EMBEDS))


def check_session(session: ort.InferenceSession, io: GraphIO, contract: GraphContract, path) -> None:
    """The contract's roles are in the spec (BundleError), and the session is what the spec says (IOSpecError)."""
    lacks_in, lacks_out = io.missing(contract)
    if lacks_in:
        why = ("; it has no image-attention steering inputs (exported without this project's exporter?)"
               if set(lacks_in) & set(STEERING_INPUTS) else "")
        raise BundleError(f"the {contract.name} graph lacks inputs {', '.join(lacks_in)}{why}")
    if lacks_out:
        raise BundleError(f"the {contract.name} graph lacks outputs {', '.join(lacks_out)}")
    for side, spec, actual in (("inputs", io.inputs, session.get_inputs()), ("outputs", io.outputs,
                                                                              session.get_outputs())):
        have = {a.name: a for a in actual}
        problems = [f"{t.role} {t.name!r}: no such {side[:-1]}" for t in spec if t.name not in have]
        for t in spec:
            a = have.get(t.name)
            if a is None:
                continue
            dtype = _ORT_TYPES.get(a.type, a.type)
            if dtype != t.dtype:
                problems.append(f"{t.name!r}: the manifest says {t.dtype}, the graph has {dtype}")
            if len(a.shape) != len(t.dims):
                problems.append(f"{t.name!r}: the manifest says {len(t.dims)} dims {list(t.dims)}, "
                                f"the graph has {len(a.shape)} {list(a.shape)}")
        if side == "inputs":
            named = {t.name for t in spec}
            problems += [f"{name!r}: an input the manifest does not name" for name in have if name not in named]
        if any(t.role in STEERING_INPUTS and t.name not in have for t in spec):
            problems.append("the graph has no image-attention steering inputs (exported without this project's "
                            "exporter?)")
        if problems:
            raise IOSpecError(f"{path}'s {side} differ from the manifest's io spec: {'; '.join(problems)} "
                              f"(requested by the manifest: {[t.name for t in spec]}, but the graph has "
                              f"{list(have)}); re-export the bundle")
