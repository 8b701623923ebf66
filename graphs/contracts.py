"""The three graphs' inputs and outputs, as data.

One ``GraphContract`` per graph, shared by the exporter (names, dynamic axes,
dummy shapes, and the IO spec it writes into the manifest: ``graphs/io_spec.py``) and the
checks in ``graphs/``.  Each tensor has a **role**, the stable word the runtime binds by
(``input_ids``, ``image_attention_scale``, ``past_key.{layer}`` ...), and a name, the one
this exporter gives it; the runtime reads the names from the manifest, so another
exporter's names only need another manifest.  Pure Python: the runtime imports this on a robot.

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

LAST_ROW_ATTENTION = "last_row_attention"
IMAGE_ATTENTION_SHARE = "image_attention_share"
# The decoder's attention outputs, after the present K/V (bundles exported before them lack them).
ATTENTION_OUTPUTS = (LAST_ROW_ATTENTION, IMAGE_ATTENTION_SHARE)

# batch: images or prompts per call; sequence: new tokens this call;
# past_sequence: tokens already in the KV cache; total_sequence = past + sequence.
DYNAMIC_DIMS = frozenset({"batch", "sequence", "past_sequence", "total_sequence"})


# The roles of the per-layer tensors: "past_key.{layer}" ... (layer 0 .. num_layers - 1).
PAST_KEY_ROLE = "past_key.{i}"
PAST_VALUE_ROLE = "past_value.{i}"
PRESENT_KEY_ROLE = "present_key.{i}"
PRESENT_VALUE_ROLE = "present_value.{i}"
LAYER_ROLES = ("past_key", "past_value", "present_key", "present_value")


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str                 # numpy dtype name: "float32", "int64", "bool"; "float" = the export dtype
    dims: tuple[str, ...]
    role: str = ""             # what the tensor is for the runtime; "" = its name (every fixed-name tensor)

    @property
    def role_name(self) -> str:
        return self.role or self.name

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

    @property
    def input_roles(self) -> list[str]:
        return [t.role_name for t in self.inputs]

    @property
    def output_roles(self) -> list[str]:
        return [t.role_name for t in self.outputs]


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


def decoder_contract(num_layers: int, attention_outputs: bool = True) -> GraphContract:
    """The decoder with KV cache and the two steering inputs.

    ``image_attention_scale[b, l, h]`` multiplies the pre-softmax logits
    ``QK^T/sqrt(d)`` of every key j with ``image_token_mask[b, j]`` in layer l,
    head h, for every query row of the call, before the additive mask.

    Outputs: ``logits`` of the last position, the present K/V, then (unless
    ``attention_outputs`` is False: the contract of bundles exported before them)
    two float32 outputs, whatever the export dtype, about the call's last query row:

    - ``last_row_attention[b, l, j]``: its softmax attention over every key j
      (past and new, ``total_sequence`` of them), after the steering scale and the
      mask, averaged over the heads of layer l.  Each row sums to 1.  Over all keys
      rather than the image keys only: the graph knows those only through
      ``image_token_mask``, and gathering them would need data-dependent shapes.
    - ``image_attention_share[b, l]``: the sum of that row over the keys with
      ``image_token_mask[b, j]``, the share of layer l's attention that went to the image.
    """
    past, present = _kv(num_layers, "past_sequence", "total_sequence")
    attention = (TensorSpec(LAST_ROW_ATTENTION, "float32", ("batch", "num_layers", "total_sequence")),
                 TensorSpec(IMAGE_ATTENTION_SHARE, "float32", ("batch", "num_layers")))
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
        outputs=(TensorSpec("logits", "float", ("batch", "vocab")), *present,
                 *(attention if attention_outputs else ())),
    )


def bundle_contracts(num_layers: int, attention_outputs: bool = True) -> dict[str, GraphContract]:
    """{"vision": ..., "embed": ..., "decoder": ...}: the three graphs of a bundle.

    ``attention_outputs=False``: the decoder of a bundle exported before its attention outputs.
    """
    return {"vision": vision_contract(), "embed": embed_contract(),
            "decoder": decoder_contract(num_layers, attention_outputs)}


def _kv(num_layers: int, past_length: str, present_length: str) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The KV cache's tensors, [batch, KV, length, D], key then value per layer, with their roles."""
    past, present = [], []
    for i in range(num_layers):
        for name_in, role_in, name_out, role_out in ((PAST_KEY, PAST_KEY_ROLE, PRESENT_KEY, PRESENT_KEY_ROLE),
                                                     (PAST_VALUE, PAST_VALUE_ROLE, PRESENT_VALUE, PRESENT_VALUE_ROLE)):
            past.append(TensorSpec(name_in.format(i=i), "float", ("batch", "kv_heads", past_length, "head_dim"),
                                   role_in.format(i=i)))
            present.append(TensorSpec(name_out.format(i=i), "float", ("batch", "kv_heads", present_length, "head_dim"),
                                      role_out.format(i=i)))
    return past, present


def _kv_buffers(num_layers: int) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The fused pair's shared buffers: past and present are one tensor, [1, KV, capacity, D]."""
    return _kv(num_layers, "kv_capacity", "kv_capacity")


def plain_decoder_contract(num_layers: int) -> GraphContract:
    """The fused pair's plain graph: no steering, no read-outs; its KV cache in shared buffers.

    ``attention_mask[b, j]`` is 1 for the tokens so far and this call's, then 0: its width is this
    call's total length (a prompt) or the buffers' capacity (a fixed-shape decode step).  Positions
    are the tokens so far + i (no ``position_ids``)."""
    past, present = _kv_buffers(num_layers)
    return GraphContract(
        "plain decoder",
        inputs=(TensorSpec("inputs_embeds", "float", ("batch", "sequence", "hidden")),
                TensorSpec("attention_mask", "int64", ("batch", "mask_length")), *past),
        # float32 logits whatever the pair's float type: the LM head's MatMul output is cast up in the graph
        outputs=(TensorSpec("logits", "float32", ("batch", "vocab")), *present),
    )


def steered_decoder_contract(num_layers: int) -> GraphContract:
    """The fused pair's steered graph: the plain graph's inputs and outputs, the steering inputs and the
    attention outputs of ``decoder_contract`` (``attention_mask`` as wide as the call's total length)."""
    plain = plain_decoder_contract(num_layers)
    standard = decoder_contract(num_layers)
    steering = tuple(t for t in standard.inputs if t.name in STEERING_INPUTS)
    attention = tuple(t for t in standard.outputs if t.name in ATTENTION_OUTPUTS)
    return GraphContract("steered decoder", inputs=plain.inputs + steering, outputs=plain.outputs + attention)
