"""The manifest of a Qwen2.5-VL / Qwen3-VL bundle: ``manifest.json`` with ``family`` and each graph's IO records.

Pure Python (the runtime imports it).  Unlike the LLaVA manifest's name lists, each graph is described
by its inputs and outputs as records (name, dtype, dims, role: ``graphs/qwen_vl_contracts.py``), so a
runtime binds tensors by role.  Written by ``export/qwen_vl/bundle.py`` and ``quantize/qwen_bundle.py``, signed by ``runtime.bundle_write.sign``
(which re-reads what it signs with ``from_dict``):

    {"family": "qwen2_5_vl", "schema_version": 1,
     "graphs": {"vision": {"file": "vision.onnx", "inputs": [{"name", "dtype", "dims", "role"}, ...],
                           "outputs": [...]}, "embed": {...}, "decoder": {...}},
     "decoder": {num_layers, num_attention_heads, num_key_value_heads, head_dim, hidden_size, vocab_size, ...},
     "vision": {patch_size, merge_size, window_size, position_grid_side, temporal_patch_size, in_channels},
     "mrope": {"section": [...], "interleaved": bool}, "deepstack_layers": D,
     "tokens": {image, video, vision_start, vision_end, eos, pad}, "stop_token_ids": [...],
     "prompt_template": "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>{question}<|im_end|>...",
     "files": {tokenizer, chat_template, preprocessor_config}, "parity": {...}, "sha256": {...},
     "fused_decoders": {"fp32": {"plain", "steered", "data", "parity", ...}} or null,
     "quantization": {"precision", "method", "bits", "graphs", "source_sha256", "accuracy", ...} or null}
"""
from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field
from pathlib import Path
from typing import Any

from .manifest import MANIFEST_FILE
from .manifest_fields import FUSED_DTYPES, FUSED_FILES, ManifestFieldError, check_file_name, check_types

QWEN_SCHEMA_VERSION = 1
QWEN_FAMILIES = ("qwen2_5_vl", "qwen3_vl")


class QwenManifestError(ValueError):
    """A manifest that is not a Qwen bundle's, or lacks one of its fields."""


@dataclass(frozen=True)
class QwenManifest:
    family: str                             # config.json's model_type: qwen2_5_vl | qwen3_vl
    source_model: str
    graphs: dict[str, dict[str, Any]]       # name -> {"file", "inputs": [records], "outputs": [records]}
    decoder: dict[str, int]
    vision: dict[str, Any]
    mrope: dict[str, Any]
    deepstack_layers: int
    tokens: dict[str, int | None]
    stop_token_ids: list[int]               # greedy decoding ends at any of these (the tokenizer's eos and pad)
    prompt_template: str                    # the chat template rendered once: "{question}" and one image placeholder
    image_placeholder: str                  # "<|image_pad|>": one per image, expanded to t*h*w / merge^2 tokens
    files: dict[str, str]
    dtype: str
    opset: int
    attention_form: str
    exporter_versions: dict[str, str]
    parity: dict[str, float]                # key -> ONNX Runtime's largest distance from PyTorch
    parity_tolerance: dict[str, float]
    parity_rule: dict[str, str]
    parity_fp32_noise: dict[str, float]     # the exported wrapper fp32 vs float64
    parity_wrapper: dict[str, float]        # the exported wrapper fp32 vs the reference
    parity_cases: dict[str, Any]
    schema_version: int = QWEN_SCHEMA_VERSION
    sha256: dict[str, str] = field(default_factory=dict)
    # dtype -> {plain, steered, data (file names), parity {standard, reference}, parity_tolerance, nodes_per_layer,
    # rotary, ...}: the fused decoder pair (fused/qwen_vl.py), or None (exported with --no-fused)
    fused_decoders: dict[str, dict[str, Any]] | None = None
    # set by `python -m quantize` (quantize/qwen_bundle.py): method, bits, the graphs converted, the source's
    # manifest sha256, the accuracy measured against the source; None in an export
    quantization: dict[str, Any] | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "manifest") -> "QwenManifest":
        """Build from parsed JSON after checking its family, that no field is missing and every field's type
        (``QwenManifestError``, a ValueError)."""
        if not isinstance(data, dict) or data.get("family") not in QWEN_FAMILIES:
            family = data.get("family") if isinstance(data, dict) else None
            raise QwenManifestError(f"{where}: manifest family {family!r} is not a Qwen family "
                                    f"({', '.join(QWEN_FAMILIES)})")
        missing = sorted(n for n, f in cls.__dataclass_fields__.items()
                         if n not in data and f.default is MISSING and f.default_factory is MISSING)
        if missing:
            raise QwenManifestError(f"{where}: the Qwen manifest lacks {', '.join(missing)}")
        try:
            check_types(cls, data)
            for graph in ("vision", "embed", "decoder"):
                record = data["graphs"].get(graph)
                if record is None or not {"file", "inputs", "outputs"} <= set(record):
                    raise ManifestFieldError(f"graphs[{graph!r}] must name its file, inputs and outputs")
                check_file_name(record["file"], f"graphs[{graph!r}]['file']")
            for key, name in data["files"].items():
                if name:                               # chat_template is "" when the checkpoint had none
                    check_file_name(name, f"files[{key!r}]")
            for dtype, record in (data.get("fused_decoders") or {}).items():
                _check_fused_files(dtype, record)
        except ManifestFieldError as e:
            raise QwenManifestError(f"{where}: {e}") from None
        return cls(**data)

    @classmethod
    def read(cls, folder: Path) -> "QwenManifest":
        return cls.from_dict(json.loads((Path(folder) / MANIFEST_FILE).read_text()), str(folder))

    def input_names(self, graph: str) -> list[str]:
        return [t["name"] for t in self.graphs[graph]["inputs"]]

    def output_names(self, graph: str) -> list[str]:
        return [t["name"] for t in self.graphs[graph]["outputs"]]

    def by_role(self, graph: str, role: str) -> str:
        """The name of ``graph``'s input or output with ``role``."""
        for t in (*self.graphs[graph]["inputs"], *self.graphs[graph]["outputs"]):
            if t["role"] == role:
                return t["name"]
        raise QwenManifestError(f"graph {graph!r} has no tensor with role {role!r}")


def _check_fused_files(dtype: Any, record: Any) -> None:
    """A Qwen fused record keyed by its float type names its plain, steered and weights files inside the bundle
    (its parity is nested per reference, ``{"standard": {...}, "reference": {...}}``, unlike LLaVA's record)."""
    where = f"fused_decoders[{dtype!r}]"
    if dtype not in FUSED_DTYPES or not isinstance(record, dict):
        raise ManifestFieldError(f"{where} must be an object keyed by one of {', '.join(FUSED_DTYPES)}")
    for key in FUSED_FILES:
        file = record.get(key)
        if not isinstance(file, str) or file.startswith("."):
            raise ManifestFieldError(f"{where}[{key!r}] must name a file inside the bundle folder, got {file!r}")
        check_file_name(file, f"{where}[{key!r}]")
