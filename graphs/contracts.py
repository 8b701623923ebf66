"""The three graphs' inputs and outputs, as data.

One ``GraphContract`` per graph, shared by the exporter (names, dynamic axes,
dummy shapes), the checks in ``graphs/`` and the runtime (which verifies a
loaded session against it).  Pure Python: the runtime imports this on a robot.

Dimension names are symbolic; those in ``DYNAMIC_DIMS`` are left free in the
ONNX graph, the others are fixed at export (the image size, hidden sizes).
"""
from __future__ import annotations

from dataclasses import dataclass

PAST_KEY = "past_key_values.{i}.key"
PAST_VALUE = "past_key_values.{i}.value"
PRESENT_KEY = "present.{i}.key"
PRESENT_VALUE = "present.{i}.value"

IMAGE_ATTENTION_SCALE = "image_attention_scale"
IMAGE_TOKEN_MASK = "image_token_mask"
STEERING_INPUTS = (IMAGE_ATTENTION_SCALE, IMAGE_TOKEN_MASK)

# batch: images or prompts per call; sequence: new tokens this call;
# past_sequence: tokens already in the KV cache; total_sequence = past + sequence.
DYNAMIC_DIMS = frozenset({"batch", "sequence", "past_sequence", "total_sequence"})


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str                 # numpy dtype name: "float32", "int64", "bool"; "float" = the export dtype
    dims: tuple[str, ...]

    def dynamic_axes(self) -> dict[int, str]:
        return {i: d for i, d in enumerate(self.dims) if d in DYNAMIC_DIMS}


@dataclass(frozen=True)
class GraphContract:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]


def vision_contract() -> GraphContract:
    return GraphContract(
        "vision",
        inputs=(TensorSpec("pixel_values", "float", ("batch", "3", "height", "width")),),
        outputs=(TensorSpec("image_features", "float", ("batch", "image_tokens", "hidden")),),
    )


def embed_contract() -> GraphContract:
    return GraphContract(
        "embed",
        inputs=(TensorSpec("input_ids", "int64", ("batch", "sequence")),),
        outputs=(TensorSpec("inputs_embeds", "float", ("batch", "sequence", "hidden")),),
    )


def decoder_contract(num_layers: int) -> GraphContract:
    """The decoder with KV cache and the two steering inputs.

    ``image_attention_scale[b, l, h]`` multiplies the pre-softmax logits
    ``QK^T/sqrt(d)`` of every key j with ``image_token_mask[b, j]`` in layer l,
    head h, for every query row of the call, before the additive mask.
    """
    past = []
    present = []
    for i in range(num_layers):
        for tpl_in, tpl_out in ((PAST_KEY, PRESENT_KEY), (PAST_VALUE, PRESENT_VALUE)):
            past.append(TensorSpec(tpl_in.format(i=i), "float", ("batch", "kv_heads", "past_sequence", "head_dim")))
            present.append(TensorSpec(tpl_out.format(i=i), "float", ("batch", "kv_heads", "total_sequence", "head_dim")))
    return GraphContract(
        "decoder",
        inputs=(
            TensorSpec("inputs_embeds", "float", ("batch", "sequence", "hidden")),
            TensorSpec("attention_mask", "int64", ("batch", "total_sequence")),
            TensorSpec("position_ids", "int64", ("batch", "sequence")),
            *past,
            TensorSpec(IMAGE_ATTENTION_SCALE, "float32", ("batch", "num_layers", "num_heads")),
            TensorSpec(IMAGE_TOKEN_MASK, "bool", ("batch", "total_sequence")),
        ),
        # logits of the last position only: a 600-token prefill never materialises 600 x vocab
        outputs=(TensorSpec("logits", "float", ("batch", "vocab")), *present),
    )


def bundle_contracts(num_layers: int) -> dict[str, GraphContract]:
    """{"vision": ..., "embed": ..., "decoder": ...}: the three graphs of a bundle."""
    return {"vision": vision_contract(), "embed": embed_contract(), "decoder": decoder_contract(num_layers)}
