"""Gather a graph's per-tensor external data files into one ``<graph>.onnx_data``, one tensor at a time.

Over 2 GB, PyTorch's exporter writes every weight to a file of its own.
Optimum then loads all of them back into memory at once to re-save them as one
file, while the PyTorch weights are still alive: two copies of the decoder.
``streaming_external_data`` turns that step off for the duration of an export,
and ``consolidate`` does it afterwards, once the PyTorch weights are freed:

    decoder.onnx + N weight files --(read one, append one)--> decoder.onnx + decoder.onnx_data

Peak memory: the largest single tensor.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import onnx
from onnx.external_data_helper import ExternalDataInfo, uses_external_data

_ALIGN = 4096   # page-aligned offsets let ONNX Runtime memory-map the weights


@contextlib.contextmanager
def streaming_external_data():
    """Stop Optimum's in-memory consolidation (``export_pytorch``) while this block runs."""
    from optimum.exporters.onnx import convert

    original = convert.check_model_uses_external_data
    convert.check_model_uses_external_data = lambda model: False
    try:
        yield
    finally:
        convert.check_model_uses_external_data = original


def consolidate(path: Path) -> bool:
    """Rewrite ``path``'s external tensors into ``<name>_data``; returns False if it had none."""
    path = Path(path)
    model = onnx.load(str(path), load_external_data=False)
    tensors = [t for t in _tensors(model) if uses_external_data(t)]
    if not tensors:
        return False
    folder, target = path.parent, path.name + "_data"
    sources = set()
    offset = 0
    with open(folder / (target + ".tmp"), "wb") as out:
        for tensor in tensors:
            info = ExternalDataInfo(tensor)
            sources.add(info.location)
            with open(folder / info.location, "rb") as f:
                f.seek(info.offset or 0)
                data = f.read(info.length) if info.length else f.read()
            padding = -offset % _ALIGN
            out.write(b"\0" * padding)
            offset += padding
            out.write(data)
            _point_to(tensor, target, offset, len(data))
            offset += len(data)
    onnx.save(model, str(path))
    for name in sources - {target}:
        (folder / name).unlink()
    (folder / (target + ".tmp")).replace(folder / target)
    return True


def _point_to(tensor: onnx.TensorProto, location: str, offset: int, length: int) -> None:
    # onnx's set_external_data wants the bytes in memory; only the pointer changes here.
    del tensor.external_data[:]
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    tensor.data_location = onnx.TensorProto.EXTERNAL


def _tensors(model: onnx.ModelProto):
    from onnx.external_data_helper import _get_all_tensors   # initializers and Constant attributes
    return _get_all_tensors(model)
