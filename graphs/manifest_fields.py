"""Every field of a manifest, checked: types, ranges, templates' placeholders, file names.

A manifest is read from a file anyone with access to the bundle folder can edit, so nothing in it
is used before it is checked here: a string where a count belongs, a K/V template with another
placeholder than ``{i}``, a prompt template without ``{question}``, past and present templates that
do not name the decoder's own inputs and outputs, a file name that leaves the bundle folder.  One
exception type, ``ManifestFieldError``, names the field and what was expected; the runtime turns it
into its own ``BundleError``.  Pure Python (no numpy): the runtime imports it on a robot.
"""
from __future__ import annotations

import dataclasses
import math
import string
import typing
from pathlib import PurePosixPath
from typing import Any, Union


class ManifestFieldError(ValueError):
    """A manifest field has the wrong type, is out of range, or names something it must not."""


def check_types(cls: type, data: dict[str, Any], where: str = "") -> None:
    """Check ``data`` (parsed JSON) against the annotations of dataclass ``cls``, recursively.

    JSON has no tuples: a list stands for a ``tuple[...]``.  ``bool`` is not accepted as an int.
    Unknown keys are refused: a misspelt field would otherwise silently keep its default.
    """
    if not isinstance(data, dict):
        raise ManifestFieldError(f"{where or 'manifest'} must be a JSON object, got {_kind(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ManifestFieldError(f"{where or 'manifest'} has unknown field(s) {', '.join(unknown)}")
    for name, f in fields.items():
        path = f"{where}.{name}" if where else name
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ManifestFieldError(f"{path} is missing")
            continue
        _check_value(hints[name], data[name], path)


def _check_value(hint: Any, value: Any, path: str) -> None:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union:                                      # X | None
        if value is None and type(None) in args:
            return
        rest = [a for a in args if a is not type(None)]
        return _check_value(rest[0] if len(rest) == 1 else Union[tuple(rest)], value, path)
    if dataclasses.is_dataclass(hint):
        return check_types(hint, value, path)
    if origin is dict:
        if not isinstance(value, dict):
            raise ManifestFieldError(f"{path} must be an object, got {_kind(value)}")
        key_type, value_type = args or (str, Any)
        for k, v in value.items():
            _check_value(key_type, k, f"{path} key")
            _check_value(value_type, v, f"{path}[{k!r}]")
        return
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ManifestFieldError(f"{path} must be a list, got {_kind(value)}")
        if origin is tuple and args and args[-1] is not Ellipsis and len(value) != len(args):
            raise ManifestFieldError(f"{path} must have {len(args)} entries, got {len(value)}")
        item_types = [args[0]] * len(value) if origin is list or args[-1:] == (Ellipsis,) else args
        for i, (t, v) in enumerate(zip(item_types, value)):
            _check_value(t, v, f"{path}[{i}]")
        return
    if hint is Any:
        return
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok:
            raise ManifestFieldError(f"{path} must be a finite number, got {_kind(value)} {value!r}")
        return
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ManifestFieldError(f"{path} must be an integer, got {_kind(value)} {value!r}")
    if hint in (str, bool) and not isinstance(value, hint):
        raise ManifestFieldError(f"{path} must be a {hint.__name__}, got {_kind(value)} {value!r}")


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), type(value).__name__)


def placeholders(template: str, path: str) -> list[str]:
    """The ``{name}`` fields of a ``str.format`` template, in order; refuses malformed ones."""
    try:
        return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as e:
        raise ManifestFieldError(f"{path} {template!r} is not a valid template: {e}") from None


def check_template(template: str, wanted: list[str], path: str) -> None:
    got = placeholders(template, path)
    if got != wanted:
        raise ManifestFieldError(f"{path} {template!r} must hold exactly the placeholder(s) "
                                 f"{', '.join('{' + w + '}' for w in wanted)}; it holds {got or 'none'}")


def check_file_name(name: str, path: str) -> None:
    """A file named by the manifest must be a relative path inside the bundle folder."""
    p = PurePosixPath(name)
    if not name or p.is_absolute() or "\\" in name or ".." in p.parts or name.startswith("~"):
        raise ManifestFieldError(f"{path} {name!r} must be a file name inside the bundle folder")


def at_least(value: int | float, low: int | float, path: str) -> None:
    if value < low:
        raise ManifestFieldError(f"{path} must be >= {low}, got {value}")


DTYPES = ("fp32", "fp16")


def check_meaning(m: Any, attention_forms: tuple[str, ...]) -> None:
    """Ranges and cross-field agreement of a typed manifest (its types already checked)."""
    d = m.decoder
    for name in ("num_layers", "num_attention_heads", "num_key_value_heads", "head_dim", "hidden_size",
                 "vocab_size", "max_position_embeddings"):
        at_least(getattr(d, name), 1, f"decoder.{name}")
    if d.num_attention_heads % d.num_key_value_heads:
        raise ManifestFieldError(f"decoder.num_attention_heads ({d.num_attention_heads}) must be a multiple of "
                                 f"decoder.num_key_value_heads ({d.num_key_value_heads})")
    for name in ("image_token_id", "eos_token_id", "bos_token_id", "pad_token_id"):
        value = getattr(m, name)
        if value is not None and not 0 <= value < d.vocab_size:
            raise ManifestFieldError(f"{name} must be a token id in [0, {d.vocab_size}), got {value}")
    at_least(m.image_tokens_per_image, 1, "image_tokens_per_image")
    at_least(m.image_hidden_size, 1, "image_hidden_size")
    at_least(m.opset, 1, "opset")
    if m.image_grid is not None:
        if len(m.image_grid) != 2:
            raise ManifestFieldError(f"image_grid must be [rows, cols], got {list(m.image_grid)}")
        rows, cols = m.image_grid
        at_least(min(rows, cols), 1, "image_grid")
        if rows * cols + bool(m.image_cls_token) != m.image_tokens_per_image:
            raise ManifestFieldError(f"image_grid {rows}x{cols} (CLS token: {bool(m.image_cls_token)}) does not "
                                     f"give image_tokens_per_image={m.image_tokens_per_image}")
    p = m.preprocessing
    for name in ("resize_shortest_edge", "crop_height", "crop_width"):
        at_least(getattr(p, name), 1, f"preprocessing.{name}")
    if not 0 < p.rescale_factor <= 1:
        raise ManifestFieldError(f"preprocessing.rescale_factor must be in (0, 1], got {p.rescale_factor}")
    if min(p.image_std) <= 0:
        raise ManifestFieldError(f"preprocessing.image_std must be positive, got {list(p.image_std)}")
    if m.dtype not in DTYPES:
        raise ManifestFieldError(f"dtype must be one of {', '.join(DTYPES)}, got {m.dtype!r}")
    if m.attention_form not in attention_forms:
        raise ManifestFieldError(f"attention_form must be one of {', '.join(attention_forms)}, got {m.attention_form!r}")
    _check_names(m)


def _check_names(m: Any) -> None:
    """Templates hold the right placeholders and name the decoder's own tensors; files stay in the folder."""
    for name in ("past_key_template", "past_value_template", "present_key_template", "present_value_template"):
        check_template(getattr(m, name), ["i"], name)
    check_template(m.prompt_template, ["question"], "prompt_template")
    if not m.image_placeholder or m.prompt_template.count(m.image_placeholder) != 1:
        raise ManifestFieldError(f"prompt_template {m.prompt_template!r} must hold image_placeholder "
                                 f"{m.image_placeholder!r} exactly once")
    for graph in ("vision", "embed", "decoder"):
        if graph not in m.graphs or graph not in m.inputs or graph not in m.outputs:
            raise ManifestFieldError(f"graphs, inputs and outputs must each name the {graph!r} graph")
    inputs, outputs = set(m.inputs["decoder"]), set(m.outputs["decoder"])
    for i in range(m.decoder.num_layers):
        for template in (m.past_key_template, m.past_value_template):
            if template.format(i=i) not in inputs:
                raise ManifestFieldError(f"past template {template!r} names {template.format(i=i)!r}, "
                                         f"which is not an input of the decoder")
        for template in (m.present_key_template, m.present_value_template):
            if template.format(i=i) not in outputs:
                raise ManifestFieldError(f"present template {template!r} names {template.format(i=i)!r}, "
                                         f"which is not an output of the decoder")
    if m.past_key_template == m.past_value_template or m.present_key_template == m.present_value_template:
        raise ManifestFieldError("the key and value templates must differ")
    for graph, file in m.graphs.items():
        check_file_name(file, f"graphs[{graph!r}]")
    check_file_name(m.tokenizer_file, "tokenizer_file")
    for dtype, record in (m.fused_decoders or {}).items():
        check_fused_record(dtype, record)
    for file, digest in m.sha256.items():
        check_file_name(file, "sha256 key")
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ManifestFieldError(f"sha256[{file!r}] must be 64 lowercase hex digits, got {digest!r}")


FUSED_DTYPES = ("fp32", "fp16")
# the pair's files (the plain and the steered graph, their one weights file), and what else a record says
FUSED_FILES = ("plain", "steered", "data")
FUSED_FIELDS = frozenset({*FUSED_FILES, "dtype", "kv_layout", "parity", "parity_tolerance", "parity_rule",
                          "nodes", "nodes_per_layer", "attention_op", "ops", "checked_against", "providers",
                          "quantization"})
# the earlier one-graph layout: still read (the runtime leaves it for the standard decoder), never written
LEGACY_FUSED_FIELDS = frozenset({"file", "dtype", "parity", "nodes", "nodes_per_layer", "attention_op", "ops",
                                 "checked_against", "providers"})
# what each field of a record holds (the files are checked by name below); the one-graph layout's node counts
# were one number, not one per graph
FUSED_TYPES = {"dtype": str, "kv_layout": str, "parity": dict[str, float], "parity_tolerance": dict[str, float],
               "parity_rule": str, "nodes": dict[str, float], "nodes_per_layer": dict[str, float],
               "attention_op": str, "ops": list[str], "checked_against": str, "providers": list[str],
               "quantization": dict[str, Any]}


def fused_record_files(record: dict) -> list[str]:
    """The files a ``fused_decoders`` record names (checked by ``check_fused_record``)."""
    return [record["file"]] if "file" in record and "plain" not in record else [record[k] for k in FUSED_FILES]


def check_fused_record(dtype: Any, record: Any) -> None:
    where = f"fused_decoders[{dtype!r}]"
    if dtype not in FUSED_DTYPES:
        raise ManifestFieldError(f"{where}: the key must be one of {', '.join(FUSED_DTYPES)}")
    if not isinstance(record, dict):
        raise ManifestFieldError(f"{where} must be an object, got {_kind(record)}")
    legacy = "file" in record and "plain" not in record
    known = LEGACY_FUSED_FIELDS if legacy else FUSED_FIELDS
    unknown = sorted(set(record) - known)
    if unknown:
        raise ManifestFieldError(f"{where} has unknown fields {', '.join(map(repr, unknown))}")
    for key in ("file",) if legacy else FUSED_FILES:
        file = record.get(key)
        if not isinstance(file, str) or file.startswith("."):       # a dot name: a fused build not yet renamed
            raise ManifestFieldError(f"{where}[{key!r}] must name a file inside the bundle folder, got {file!r}")
        check_file_name(file, f"{where}[{key!r}]")
    for key, hint in FUSED_TYPES.items():
        if key in record:
            legacy_count = legacy and key in ("nodes", "nodes_per_layer")
            _check_value(float if legacy_count else hint, record[key], f"{where}[{key!r}]")
    if record.get("dtype", dtype) != dtype:
        raise ManifestFieldError(f"{where}['dtype'] is {record.get('dtype')!r}, not its key {dtype!r}")
