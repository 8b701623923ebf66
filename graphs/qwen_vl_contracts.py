"""The Qwen2.5-VL / Qwen3-VL graphs' inputs and outputs, as data: name, dtype, dims and role.

Shared by the exporter (names, dynamic axes, the manifest's IO records) and the runtime (which binds
tensors by role).  Pure Python: the runtime imports this on a robot.

    vision   pixel_values [patches, C*T*P*P] + the grid-only index tensors (runtime/qwen_vl/vision_feeds.py)
             -> image_features [merged, hidden] (+ Qwen3-VL: deepstack_features [D, merged, hidden])
    embed    input_ids [B, S] -> inputs_embeds [B, S, hidden]
    decoder  inputs_embeds, attention_mask, position_ids [3, B, S] (M-RoPE), the KV cache,
             image_attention_scale [B, L, H], image_token_mask [B, P+S]
             (+ Qwen3-VL: deepstack_embeds [D, B, S, hidden], zero outside the image rows)
             -> logits [B, V], present K/V, last_row_attention [B, L, P+S], image_attention_share [B, L]

Dimension names in ``DYNAMIC_DIMS`` are free in the graph; the others are fixed at export.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from .contracts import (IMAGE_ATTENTION_SCALE, IMAGE_ATTENTION_SHARE, IMAGE_TOKEN_MASK, LAST_ROW_ATTENTION, PAST_KEY,
                        PAST_VALUE, PRESENT_KEY, PRESENT_VALUE)

# patches: the image's patches (t*h*w); merged: patches / merge^2 (its image tokens);
# batch, sequence, past_sequence, total_sequence: as for LLaVA's decoder (graphs/contracts.py)
DYNAMIC_DIMS = frozenset({"patches", "merged", "batch", "sequence", "past_sequence", "total_sequence"})

DEEPSTACK_FEATURES = "deepstack_features"
DEEPSTACK_EMBEDS = "deepstack_embeds"


@dataclass(frozen=True)
class IOSpec:
    name: str
    dtype: str                 # numpy dtype name; "float" = the export dtype
    dims: tuple[str, ...]
    role: str                  # what the tensor is, for binding by role (the name may change, the role not)

    def dynamic_axes(self) -> dict[int, str]:
        return {i: d for i, d in enumerate(self.dims) if d in DYNAMIC_DIMS}

    def record(self, float_dtype: str) -> dict:
        """The manifest's record: dtype resolved ("float" -> "float32"/"float16"), dims as a list."""
        d = asdict(self)
        d["dtype"] = {"fp32": "float32", "fp16": "float16"}[float_dtype] if self.dtype == "float" else self.dtype
        d["dims"] = list(self.dims)
        return d


@dataclass(frozen=True)
class QwenGraphContract:
    name: str
    inputs: tuple[IOSpec, ...]
    outputs: tuple[IOSpec, ...]

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def record(self, file: str, float_dtype: str) -> dict:
        return {"file": file, "inputs": [t.record(float_dtype) for t in self.inputs],
                "outputs": [t.record(float_dtype) for t in self.outputs]}


def vision_contract(window_attention: bool, deepstack: bool) -> QwenGraphContract:
    """Qwen2.5-VL: ``window_attention``; Qwen3-VL: ``deepstack`` (its learned position table, bilinearly sampled)."""
    inputs = [IOSpec("pixel_values", "float", ("patches", "patch_dim"), "patches"),
              IOSpec("rotary_positions", "int64", ("patches", "2"), "vision_rotary_positions"),
              IOSpec("frame_segments", "int64", ("patches",), "vision_full_attention_segments")]
    if window_attention:
        inputs += [IOSpec("window_index", "int64", ("merged",), "vision_window_index"),
                   IOSpec("window_reverse", "int64", ("merged",), "vision_window_reverse"),
                   IOSpec("window_segments", "int64", ("patches",), "vision_window_segments")]
    if deepstack:
        inputs += [IOSpec("position_indices", "int64", ("4", "patches"), "vision_position_indices"),
                   IOSpec("position_weights", "float32", ("4", "patches"), "vision_position_weights")]
    outputs = [IOSpec("image_features", "float", ("merged", "hidden"), "image_features")]
    if deepstack:
        outputs.append(IOSpec(DEEPSTACK_FEATURES, "float", ("deepstack", "merged", "hidden"), "deepstack_features"))
    return QwenGraphContract("vision", tuple(inputs), tuple(outputs))


def embed_contract() -> QwenGraphContract:
    return QwenGraphContract("embed", (IOSpec("input_ids", "int64", ("batch", "sequence"), "input_ids"),),
                             (IOSpec("inputs_embeds", "float", ("batch", "sequence", "hidden"), "inputs_embeds"),))


def decoder_contract(num_layers: int, deepstack: bool) -> QwenGraphContract:
    """The decoder with KV cache, M-RoPE positions and the steering inputs.

    ``image_attention_scale[b, l, h]`` multiplies the pre-softmax logits of every key j with
    ``image_token_mask[b, j]`` in layer l, head h, for every query row of the call (as LLaVA's).
    ``deepstack_embeds[k, b, s]``: added to the hidden states after decoder layer k (zero rows leave
    a position as it is): the DeepStack features scattered onto the image rows of this call.
    """
    past, present = [], []
    for i in range(num_layers):
        for tpl_in, tpl_out, kind in ((PAST_KEY, PRESENT_KEY, "key"), (PAST_VALUE, PRESENT_VALUE, "value")):
            past.append(IOSpec(tpl_in.format(i=i), "float", ("batch", "kv_heads", "past_sequence", "head_dim"),
                               f"past_{kind}.{i}"))
            present.append(IOSpec(tpl_out.format(i=i), "float", ("batch", "kv_heads", "total_sequence", "head_dim"),
                                  f"present_{kind}.{i}"))
    inputs = [IOSpec("inputs_embeds", "float", ("batch", "sequence", "hidden"), "inputs_embeds"),
              IOSpec("attention_mask", "int64", ("batch", "total_sequence"), "attention_mask"),
              IOSpec("position_ids", "int64", ("3", "batch", "sequence"), "mrope_position_ids"),
              *past,
              IOSpec(IMAGE_ATTENTION_SCALE, "float32", ("batch", "num_layers", "num_heads"), "image_attention_scale"),
              IOSpec(IMAGE_TOKEN_MASK, "bool", ("batch", "total_sequence"), "image_token_mask")]
    if deepstack:
        inputs.append(IOSpec(DEEPSTACK_EMBEDS, "float", ("deepstack", "batch", "sequence", "hidden"), "deepstack_embeds"))
    outputs = (IOSpec("logits", "float", ("batch", "vocab"), "logits"), *present,
               IOSpec(LAST_ROW_ATTENTION, "float32", ("batch", "num_layers", "total_sequence"), "last_row_attention"),
               IOSpec(IMAGE_ATTENTION_SHARE, "float32", ("batch", "num_layers"), "image_attention_share"))
    return QwenGraphContract("decoder", tuple(inputs), outputs)


def qwen_contracts(num_layers: int, window_attention: bool, deepstack: bool) -> dict[str, QwenGraphContract]:
    return {"vision": vision_contract(window_attention, deepstack), "embed": embed_contract(),
            "decoder": decoder_contract(num_layers, deepstack)}
