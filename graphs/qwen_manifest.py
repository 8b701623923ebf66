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
        _check_read_fields(data, where)
        return cls(**data)

    @classmethod
    def read(cls, folder: Path) -> "QwenManifest":
        return cls.from_dict(json.loads((Path(folder) / MANIFEST_FILE).read_text()), str(folder))

    def graph_file(self, graph: str) -> str:
        return self.graphs[graph]["file"]

    def named_files(self) -> list[str]:
        """Every file the manifest names: the three graphs, the copied checkpoint files, the fused pair's files."""
        fused = [record[k] for record in (self.fused_decoders or {}).values() for k in ("plain", "steered", "data")
                 if isinstance(record, dict) and record.get(k)]
        return [*(g["file"] for g in self.graphs.values()), *(f for f in self.files.values() if f), *fused]

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


_GRAPHS = ("vision", "embed", "decoder")
_DECODER_INTS = ("num_layers", "num_attention_heads", "num_key_value_heads", "head_dim", "hidden_size", "vocab_size",
                 "max_position_embeddings")
_VISION_INTS = ("patch_size", "merge_size", "temporal_patch_size")
_TOKENS = ("image", "video", "vision_start")          # what the prompt layout and M-RoPE read
_RECORD_KEYS = ("name", "dtype", "dims", "role")


def _check_read_fields(data: dict, where: str) -> None:
    """The types of what a runtime reads; the parity tables and versions are for people, not checked here."""
    def fail(field_name: str, want: str) -> None:
        raise QwenManifestError(f"{where}: the Qwen manifest's {field_name} must be {want}; got "
                                f"{_shown(_get(data, field_name))}")

    graphs = data["graphs"]
    if not isinstance(graphs, dict) or any(g not in graphs for g in _GRAPHS):
        fail("graphs", f"an object with {', '.join(_GRAPHS)}")
    for name, graph in graphs.items():
        if not isinstance(graph, dict) or not _is_str(graph.get("file")):
            fail(f"graphs.{name}", "an object with a file name, inputs and outputs")
        for side in ("inputs", "outputs"):
            rows = graph.get(side)
            if not isinstance(rows, list) or not all(isinstance(r, dict) and all(k in r for k in _RECORD_KEYS)
                                                     for r in rows):
                fail(f"graphs.{name}.{side}", f"a list of records with {', '.join(_RECORD_KEYS)}")
    for group, keys in (("decoder", _DECODER_INTS), ("vision", _VISION_INTS)):
        if not isinstance(data[group], dict):
            fail(group, "an object")
        for key in keys:
            if not _is_positive_int(data[group].get(key)):
                fail(f"{group}.{key}", "a positive integer")
    if not isinstance(data["tokens"], dict) or not all(_is_int(data["tokens"].get(k)) for k in _TOKENS):
        fail("tokens", f"an object with integer {', '.join(_TOKENS)}")
    stops = data["stop_token_ids"]
    if not isinstance(stops, list) or not stops or not all(_is_int(t) for t in stops):
        fail("stop_token_ids", "a non-empty list of integers")
    if not isinstance(data["mrope"], dict) or not isinstance(data["mrope"].get("section"), list):
        fail("mrope", "an object with a section list")
    if not _is_int(data["deepstack_layers"]) or data["deepstack_layers"] < 0:
        fail("deepstack_layers", "an integer >= 0")
    for key in ("prompt_template", "image_placeholder", "dtype"):
        if not _is_str(data[key]):
            fail(key, "a non-empty string")
    if data["image_placeholder"] not in data["prompt_template"] or "{question}" not in data["prompt_template"]:
        fail("prompt_template", "a template holding {question} and the image placeholder")
    files = data["files"]
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()) \
            or not all(_is_str(files.get(k)) for k in ("tokenizer", "preprocessor_config")):
        fail("files", "an object naming the tokenizer and preprocessor_config files")
    if not isinstance(data.get("sha256", {}), dict):
        fail("sha256", "an object of file -> digest")
    fused = data.get("fused_decoders")
    if fused is not None and not (isinstance(fused, dict) and all(
            isinstance(r, dict) and all(_is_str(r.get(k)) for k in ("plain", "steered", "data")) for r in fused.values())):
        fail("fused_decoders", "null or an object of dtype -> {plain, steered, data} file names")


def _get(data: dict, dotted: str):
    value = data
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _shown(value) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_positive_int(v) -> bool:
    return _is_int(v) and v > 0


def _is_str(v) -> bool:
    return isinstance(v, str) and bool(v)


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
