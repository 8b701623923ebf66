"""The bundle manifest: the one contract between ``export/`` and ``runtime/``.

Written by the exporter as ``manifest.json`` next to the graphs; the runtime
reads nothing else to learn what the graphs are.  Pure Python (no numpy, no
onnx) so that the robot-side runtime can import it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .contracts import ATTENTION_OUTPUTS, GraphContract
from .io_spec import GraphIO, check_io
from .manifest_fields import ManifestFieldError, check_meaning, check_types, fused_record_files

SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"
# The manifest's own digest, beside it (`sha256sum -c manifest.sha256` checks it by hand too): catches
# accidental edits of the manifest, not deliberate ones (whoever can write the folder can rewrite both).
MANIFEST_DIGEST_FILE = "manifest.sha256"
# Where the decoder applies image_attention_scale (export/steered_attention.py); see Manifest.attention_form.
ATTENTION_FORMS = ("scaled-logits", "scaled-keys")
DEFAULT_ATTENTION_FORM = "scaled-keys"     # fusable attention; same answers and CPU cost as scaled-logits (docs/export.md)


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes ``pixel_values``, mirroring Hugging Face's CLIPImageProcessor."""

    resize_shortest_edge: int          # resize so the short side has this length (aspect kept)
    crop_height: int                   # centre crop after resizing
    crop_width: int
    do_center_crop: bool = True
    resample: int = 3                  # PIL resampling code; 3 = BICUBIC, CLIP's default
    rescale_factor: float = 1 / 255
    image_mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    image_std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    pad_to_square: bool = False        # LLaVA's "pad" aspect mode: pad with the mean colour first


@dataclass(frozen=True)
class DecoderShape:
    num_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    hidden_size: int
    vocab_size: int
    max_position_embeddings: int


@dataclass(frozen=True)
class Manifest:
    schema_version: int
    source_model: str                  # hub id or local folder it came from
    source_revision: str | None        # hub commit, or None for a local folder
    graphs: dict[str, str]             # {"vision": file, "embed": file, "decoder": file}
    inputs: dict[str, list[str]]       # graph -> ordered input names
    outputs: dict[str, list[str]]      # graph -> ordered output names
    past_key_template: str             # "past_key_values.{i}.key"
    past_value_template: str
    present_key_template: str          # "present.{i}.key"
    present_value_template: str
    decoder: DecoderShape
    image_token_id: int
    image_tokens_per_image: int
    image_hidden_size: int
    preprocessing: Preprocessing
    prompt_template: str               # "USER: <image>\n{question} ASSISTANT:"
    image_placeholder: str             # "<image>"
    bos_token_id: int | None
    eos_token_id: int
    pad_token_id: int | None
    dtype: str                         # "fp32" | "fp16"
    opset: int
    exporter_versions: dict[str, str]
    parity: dict[str, float]           # graph -> max |diff| reached against PyTorch
    tokenizer_file: str = "tokenizer.json"
    sha256: dict[str, str] = field(default_factory=dict)   # file -> hex digest
    # Where the image tokens sit on the image (added with the decoder's attention outputs; None in
    # manifests written before them): the vision tower's patch grid [rows, cols] over the
    # preprocessed (resized, cropped) image, patches in row-major order, and whether a CLS token
    # precedes them (LLaVA's "full" feature strategy).  image_tokens_per_image = rows * cols + CLS.
    image_grid: tuple[int, int] | None = None
    image_cls_token: bool | None = None
    quantization: dict[str, Any] | None = None   # set by `python -m quantize`: method, bits, source sha256, accuracy
    # Where the decoder applies image_attention_scale (export/steered_attention.py): "scaled-logits"
    # (a Mul on Q K^T, the form of every bundle exported before this field) or "scaled-keys" (on the
    # image keys before the MatMul; the cached keys stay unscaled).  Both compute the same attention.
    attention_form: str = "scaled-logits"
    # Fused decoders beside the standard one (``python -m fused``; ONNX Runtime's CPU and CUDA providers, not
    # TensorRT), keyed by their float type: {"fp32": {"file", "parity", "nodes_per_layer", "ops", ...}}.
    # The same inputs and outputs as ``graphs["decoder"]``; None in bundles without one.
    fused_decoders: dict[str, dict[str, Any]] | None = None
    # What ``parity`` was held to (export/tolerance.py; None in manifests written before): the limit per
    # key, how it was set (measured against float64, by magnitude and depth, fp16 absolute, or --atol),
    # and PyTorch fp32's own distance from float64 arithmetic on the parity inputs, where measured;
    # for an fp16 bundle, PyTorch fp16's distance from the fp32 reference instead.
    parity_tolerance: dict[str, float] | None = None
    parity_rule: dict[str, str] | None = None
    parity_fp32_noise: dict[str, float] | None = None
    parity_fp16_noise: dict[str, float] | None = None
    # Every graph file's inputs and outputs by role (graphs/io_spec.py), keyed by the file: what the runtime
    # binds.  None in manifests written before it: the runtime then binds the names of graphs.contracts,
    # the ones every earlier export wrote (``inputs`` / ``outputs`` above list them).
    io: dict[str, GraphIO] | None = None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Manifest":
        """Build from parsed JSON after checking every field (``ManifestFieldError``, a ValueError)."""
        check_types(cls, data)
        data = dict(data)
        data["decoder"] = DecoderShape(**data["decoder"])
        pre = dict(data["preprocessing"])
        pre["image_mean"] = tuple(pre["image_mean"])
        pre["image_std"] = tuple(pre["image_std"])
        data["preprocessing"] = Preprocessing(**pre)
        if data.get("image_grid") is not None:
            data["image_grid"] = tuple(data["image_grid"])
        if data.get("io") is not None:
            data["io"] = {file: GraphIO.from_json(spec) for file, spec in data["io"].items()}
        manifest = cls(**data)
        check_meaning(manifest, ATTENTION_FORMS)
        if manifest.io is not None:
            _check_io_names(manifest)
        return manifest

    @classmethod
    def read(cls, folder: Path) -> "Manifest":
        return cls.from_dict(json.loads((Path(folder) / MANIFEST_FILE).read_text()))

    @property
    def has_attention_outputs(self) -> bool:
        """Whether the decoder returns ``last_row_attention`` and ``image_attention_share``
        (bundles exported before those outputs do not; they load and answer all the same)."""
        if self.io is not None:
            return all(self.io[self.graphs["decoder"]].has(role) for role in ATTENTION_OUTPUTS)
        return set(ATTENTION_OUTPUTS) <= set(self.outputs.get("decoder", ()))

    def graph_io(self, file: str, contract: GraphContract, float_type: str) -> GraphIO:
        """The inputs and outputs of the graph ``file`` by role, from ``io``.  The rule for a manifest written
        before that field: the names of ``contract`` (the ones every earlier export wrote), "float" as ``float_type``."""
        if self.io is not None:
            return self.io[file]
        return GraphIO.from_contract(contract, float_type)

    def graph_files(self) -> list[str]:
        """Every graph file the manifest names: the three graphs, then the fused decoders' graphs."""
        fused = [f for record in (self.fused_decoders or {}).values() for f in fused_record_files(record)
                 if f.endswith(".onnx")]
        return [*self.graphs.values(), *fused]

    def past_names(self) -> list[str]:
        return [t.format(i=i) for i in range(self.decoder.num_layers)
                for t in (self.past_key_template, self.past_value_template)]

    def present_names(self) -> list[str]:
        return [t.format(i=i) for i in range(self.decoder.num_layers)
                for t in (self.present_key_template, self.present_value_template)]


def manifest_digest_line(manifest_bytes: bytes) -> str:
    """The digest file's one line, in ``sha256sum``'s format."""
    return f"{hashlib.sha256(manifest_bytes).hexdigest()}  {MANIFEST_FILE}\n"


def _check_io_names(m: Manifest) -> None:
    """The IO spec agrees with the name lists and the K/V templates (both kept for older readers)."""
    check_io(m.io, m.graph_files(), m.decoder.num_layers)
    for graph, file in m.graphs.items():
        spec = m.io[file]
        for side, names in (("inputs", m.inputs[graph]), ("outputs", m.outputs[graph])):
            if [t.name for t in getattr(spec, side)] != list(names):
                raise ManifestFieldError(f"{side}[{graph!r}] {list(names)} differs from io[{file!r}].{side}")
    decoder = m.io[m.graphs["decoder"]]
    for i in range(m.decoder.num_layers):
        for role, template in ((f"past_key.{i}", m.past_key_template), (f"past_value.{i}", m.past_value_template),
                               (f"present_key.{i}", m.present_key_template),
                               (f"present_value.{i}", m.present_value_template)):
            if decoder.has(role) and decoder.name(role) != template.format(i=i):
                raise ManifestFieldError(f"io names {role} {decoder.name(role)!r}; the template gives "
                                         f"{template.format(i=i)!r}")
