"""Each graph's inputs and outputs as the manifest states them: role, name, dtype, symbolic dims.

    manifest "io": {"decoder.onnx": {"inputs":  [{"role": "inputs_embeds", "name": "inputs_embeds",
                                                  "dtype": "float32", "dims": ["batch", "sequence", "hidden"]},
                                                 {"role": "past_key.0", "name": "past_key_values.0.key", ...}, ...],
                                     "outputs": [...]},
                    "vision.onnx": ..., "decoder_plain_fp32.onnx": ...}        (one entry per graph file)

The exporter writes it from ``graphs.contracts`` (``GraphIO.from_contract``); the runtime binds by role
(``GraphIO.name``) and checks each session against it.  Roles are the stable vocabulary: the fixed ones
below, and ``past_key.{layer}``, ``past_value.{layer}``, ``present_key.{layer}``, ``present_value.{layer}``.
Pure Python (no numpy): the runtime imports it on a robot.
"""
from __future__ import annotations

from dataclasses import dataclass

from .contracts import (ATTENTION_OUTPUTS, LAYER_ROLES, STEERING_INPUTS, GraphContract)
from .manifest_fields import ManifestFieldError

FIXED_ROLES = frozenset({"pixel_values", "image_features", "input_ids", "inputs_embeds", "attention_mask",
                         "position_ids", "logits", *STEERING_INPUTS, *ATTENTION_OUTPUTS})
DTYPES = ("float32", "float16", "int64", "int32", "bool")
_FLOAT = {"fp32": "float32", "fp16": "float16"}


@dataclass(frozen=True)
class TensorIO:
    role: str                  # "input_ids", "past_key.3" ...: what the runtime binds
    name: str                  # the tensor's name in the graph
    dtype: str                 # numpy dtype name
    dims: tuple[str, ...]      # symbolic ("batch", "sequence") or fixed ("3") dims


@dataclass(frozen=True)
class GraphIO:
    inputs: tuple[TensorIO, ...]
    outputs: tuple[TensorIO, ...]

    @classmethod
    def from_contract(cls, contract: GraphContract, float_type: str) -> "GraphIO":
        """The spec of a graph exported by this exporter: the contract's names, "float" as ``float_type`` (fp32/fp16)."""
        def spec(t):
            return TensorIO(t.role_name, t.name, _FLOAT[float_type] if t.dtype == "float" else t.dtype, tuple(t.dims))
        return cls(tuple(map(spec, contract.inputs)), tuple(map(spec, contract.outputs)))

    @classmethod
    def from_json(cls, data: dict) -> "GraphIO":
        def tensors(rows):
            return tuple(TensorIO(r["role"], r["name"], r["dtype"], tuple(r["dims"])) for r in rows)
        return cls(tensors(data["inputs"]), tensors(data["outputs"]))

    def name(self, role: str) -> str:
        """The graph's name for ``role`` (KeyError when it has none: ``missing`` says so first)."""
        return self._names()[role]

    def has(self, role: str) -> bool:
        return role in self._names()

    def missing(self, contract: GraphContract) -> tuple[list[str], list[str]]:
        """The contract's input and output roles this graph does not have."""
        ins, outs = {t.role for t in self.inputs}, {t.role for t in self.outputs}
        return ([r for r in contract.input_roles if r not in ins], [r for r in contract.output_roles if r not in outs])

    def _names(self) -> dict[str, str]:
        return {t.role: t.name for t in (*self.inputs, *self.outputs)}


def check_io(io: dict[str, GraphIO], graph_files: list[str], num_layers: int) -> None:
    """Every graph file has a spec and nothing else does; roles known and unique; names unique; dtypes known."""
    unknown = sorted(set(io) - set(graph_files))
    if unknown:
        raise ManifestFieldError(f"io names {', '.join(map(repr, unknown))}, which the manifest names as no graph")
    lacking = [f for f in graph_files if f not in io]
    if lacking:
        raise ManifestFieldError(f"io has no inputs and outputs for {', '.join(map(repr, lacking))}")
    for file, graph in io.items():
        for side, tensors in (("inputs", graph.inputs), ("outputs", graph.outputs)):
            where = f"io[{file!r}].{side}"
            for t in tensors:
                _check_tensor(t, where, num_layers)
            for what in ("role", "name"):
                seen = [getattr(t, what) for t in tensors]
                twice = sorted({x for x in seen if seen.count(x) > 1})
                if twice:
                    raise ManifestFieldError(f"{where} has the {what}(s) {', '.join(map(repr, twice))} more than once")


def _check_tensor(t: TensorIO, where: str, num_layers: int) -> None:
    if not t.name:
        raise ManifestFieldError(f"{where}: the tensor of role {t.role!r} has an empty name")
    if t.dtype not in DTYPES:
        raise ManifestFieldError(f"{where}: {t.name!r} has dtype {t.dtype!r}, not one of {', '.join(DTYPES)}")
    if any(not d for d in t.dims):
        raise ManifestFieldError(f"{where}: {t.name!r} has an empty dim name")
    if t.role in FIXED_ROLES:
        return
    kind, _, layer = t.role.partition(".")
    if kind not in LAYER_ROLES or not layer.isdigit() or int(layer) >= num_layers:
        raise ManifestFieldError(f"{where}: role {t.role!r} of {t.name!r} is not one this runtime knows "
                                 f"({', '.join(sorted(FIXED_ROLES))}, or past_key.N ... present_value.N for "
                                 f"N < {num_layers})")
