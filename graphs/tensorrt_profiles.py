"""Explicit TensorRT optimisation profiles for a bundle's graphs, from the contracts as data.

Without them, ONNX Runtime's TensorRT provider builds an engine for the first
shapes it sees and *rebuilds* it whenever a later input falls outside the
range seen so far: the decoder's past length grows by one every token, so
every decode step would rebuild the engine. One explicit profile per graph
covers every call the runtime makes, so one engine is built (and cached):

    symbolic dim      min   opt                     max
    batch             1     1                       1       (the runtime answers one prompt at a time)
    sequence          1     1                       P       (P = max_position_embeddings)
    past_sequence     0     image tokens + 64       P - 1
    total_sequence    1     image tokens + 65       P
    every other dim   the manifest's value (hidden, heads, head_dim, image size, ...)

``opt`` is the decode step (one new token after a prompt of about that length):
decode is most of an answer's steps; TensorRT still runs the prefill, only
with kernels tuned for the decode shape.

The strings use ONNX Runtime's provider-option syntax
``name:d0xd1x...,name:...`` (``trt_profile_min_shapes`` / ``_opt_`` / ``_max_``).
"""
from __future__ import annotations

from .contracts import bundle_contracts
from .manifest import Manifest

_OPT_ANSWER_ROOM = 64      # opt past length: the image, a short question and part of the answer


def dim_ranges(manifest: Manifest) -> dict[str, tuple[int, int, int]]:
    """Symbolic dimension name -> (min, opt, max) for this bundle."""
    d, pre = manifest.decoder, manifest.preprocessing
    longest = d.max_position_embeddings
    opt_past = min(manifest.image_tokens_per_image + _OPT_ANSWER_ROOM, longest - 1)
    fixed = {"3": 3, "height": pre.crop_height, "width": pre.crop_width,
             "hidden": d.hidden_size, "kv_heads": d.num_key_value_heads, "head_dim": d.head_dim,
             "num_layers": d.num_layers, "num_heads": d.num_attention_heads}
    ranges = {name: (v, v, v) for name, v in fixed.items()}
    ranges.update({"batch": (1, 1, 1), "sequence": (1, 1, longest),
                   "past_sequence": (0, opt_past, longest - 1), "total_sequence": (1, opt_past + 1, longest)})
    return ranges


def tensorrt_profile(manifest: Manifest, graph: str) -> dict[str, str]:
    """ONNX Runtime TensorRT provider options with one explicit profile for ``graph``'s inputs."""
    ranges = dim_ranges(manifest)
    shapes: dict[str, list[str]] = {"min": [], "opt": [], "max": []}
    for spec in bundle_contracts(manifest.decoder.num_layers)[graph].inputs:
        for which, k in (("min", 0), ("opt", 1), ("max", 2)):
            shapes[which].append(f"{spec.name}:" + "x".join(str(ranges[dim][k]) for dim in spec.dims))
    return {f"trt_profile_{which}_shapes": ",".join(entries) for which, entries in shapes.items()}
