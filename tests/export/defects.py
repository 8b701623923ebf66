"""Planting defects in exported graphs, for tests that show the parity check refuses them.

Two ways in:

    traced     a wrong piece of torch code active only while the exporter traces (the PyTorch
               reference after it runs the right code): the graph computes something else
    on disk    a bundle's graph edited after export: two weights' data swapped, a weight's bytes
               overwritten (the initializers point into ``<graph>.onnx_data``)
"""
from __future__ import annotations

import contextlib
import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import torch

import export.steered_attention as steered
import export.wrappers as wrappers


@contextlib.contextmanager
def while_tracing(monkeypatch, plant):
    """Every ONNX trace of the export runs inside ``plant()`` (a context manager); nothing else does."""
    import optimum.exporters.onnx as optimum_onnx

    real = optimum_onnx.export

    def export(*args, **kwargs):
        with plant():
            return real(*args, **kwargs)
    monkeypatch.setattr(optimum_onnx, "export", export)
    yield


@contextlib.contextmanager
def _patched(module, name, value):
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


@contextlib.contextmanager
def _attention(function):
    from transformers import AttentionInterface

    AttentionInterface.register(steered.ATTENTION_NAME, function)
    try:
        yield
    finally:
        AttentionInterface.register(steered.ATTENTION_NAME, steered.steered_attention)


_FACTOR = steered._image_key_factor         # the right one: alpha on image keys, 1 elsewhere


def _factor_on_text_keys(alpha, image_token_mask, keys):
    return _FACTOR(alpha, ~image_token_mask, keys)


def _factor_ignoring_alpha(alpha, image_token_mask, keys):
    return torch.ones(alpha.shape[0], alpha.shape[1], keys, dtype=torch.float32)      # [B, H, K]


def _factor_twice(alpha, image_token_mask, keys):
    factor = _FACTOR(alpha, image_token_mask, keys)
    return factor * factor


def _last_row_only(module, query, key, value, attention_mask, scaling, dropout=0.0, image_attention_scale=None,
                   image_token_mask=None, attention_rows=None, **kwargs):
    """Steers the call's last query row only (every row of the call should be)."""
    out, probs = steered.steered_attention(module, query, key, value, attention_mask, scaling, dropout,
                                           image_attention_scale, image_token_mask, attention_rows, **kwargs)
    plain, _ = steered.steered_attention(module, query, key, value, attention_mask, scaling, dropout, **kwargs)
    return torch.cat([plain[:, :-1], out[:, -1:]], dim=1), probs                   # [B, S, H, D]


def _mask_one_ahead(attention_mask, seq, past_len, dtype):
    """Each query also sees the next position (an off-by-one causal mask)."""
    total = attention_mask.shape[1]
    key_pos = torch.arange(total)                                                  # [K]
    query_pos = torch.arange(seq) + past_len                                       # [S]
    allowed = (key_pos[None, :] <= query_pos[:, None] + 1)[None, None] & attention_mask[:, None, None, :].bool()
    return torch.where(allowed, torch.zeros((), dtype=dtype), torch.tensor(torch.finfo(dtype).min, dtype=dtype))


def _factor(function):
    return lambda: _patched(steered, "_image_key_factor", function)


#: name -> a context manager factory that plants the defect in the traced graph
TRACED = {
    "steering on text keys": _factor(_factor_on_text_keys),
    "alpha ignored": _factor(_factor_ignoring_alpha),
    "alpha applied twice": _factor(_factor_twice),
    "steering on the last query row only": lambda: _attention(_last_row_only),
    "causal mask one position ahead": lambda: _patched(wrappers, "additive_causal_mask", _mask_one_ahead),
}


def copy_bundle(bundle: Path, to: Path) -> Path:
    shutil.copytree(bundle, to)
    return to


def _initializers(folder: Path, graph: str) -> tuple[onnx.ModelProto, dict[str, onnx.TensorProto]]:
    model = onnx.load(str(folder / f"{graph}.onnx"), load_external_data=False)
    return model, {t.name: t for t in model.graph.initializer}


def weight_name(folder: Path, graph: str, pattern: str) -> str:
    """The one initializer whose name matches ``pattern`` (a regular expression)."""
    _, inits = _initializers(folder, graph)
    names = [n for n in inits if re.search(pattern, n)]
    assert len(names) == 1, (pattern, names)
    return names[0]


def swap_weights(folder: Path, graph: str, a: str, b: str) -> None:
    """Point initializers ``a`` and ``b`` (same shape) at each other's data."""
    model, inits = _initializers(folder, graph)
    ta, tb = inits[a], inits[b]
    assert list(ta.dims) == list(tb.dims), (ta.dims, tb.dims)
    data_a, data_b = list(ta.external_data), list(tb.external_data)
    del ta.external_data[:], tb.external_data[:]
    ta.external_data.extend(data_b)
    tb.external_data.extend(data_a)
    onnx.save(model, str(folder / f"{graph}.onnx"))


def overwrite_weight(folder: Path, graph: str, name: str, edit) -> None:
    """``edit(values)`` changes a float32 or fp16 weight's values (a flat numpy copy) in the data file."""
    _, inits = _initializers(folder, graph)
    info = {e.key: e.value for e in inits[name].external_data}
    offset, length = int(info.get("offset", 0)), int(info["length"])
    path = folder / info["location"]
    raw = bytearray(path.read_bytes())
    dtype = onnx.helper.tensor_dtype_to_np_dtype(inits[name].data_type)
    values = np.frombuffer(raw, dtype=dtype, count=length // dtype.itemsize, offset=offset).copy()
    edit(values)
    raw[offset: offset + length] = values.tobytes()
    path.write_bytes(bytes(raw))


def times_tolerance(message: str) -> float:
    """The '(123x the tolerance)' of a ParityError's message."""
    found = re.search(r"\(([0-9.e+]+)x the tolerance\)", message)
    assert found, message
    return float(found.group(1))
