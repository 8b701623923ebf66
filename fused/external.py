"""Weights written straight into one ``.onnx_data`` file, one tensor at a time, page-aligned, shared by name.

    array --append (4096-aligned)--> decoder_fused_fp32.onnx_data
      `--> TensorProto {location, offset, length}    (no bytes in the .onnx itself)

So building a graph never holds more than one weight beside the checkpoint, and ONNX Runtime
can memory-map the file.  The plain and the steered decoder graph point into the same file: a
name written once is handed out again (same offset) to the second graph, never written twice.
``external_files`` reads which such files a graph names.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
from onnx import helper
from onnx.external_data_helper import uses_external_data

_ALIGN = 4096


class ExternalWeights:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._file = open(self.path, "wb")
        self._offset = 0
        self._written: dict[str, tuple[onnx.TensorProto, str]] = {}      # name -> (proto, sha256 of its bytes)

    def has(self, name: str) -> bool:
        return name in self._written

    def tensor(self, name: str, array: np.ndarray | None = None) -> onnx.TensorProto:
        """Append ``array`` and return an initializer that points at it; a name already written returns
        its initializer again (``array`` may then be None; if given, it must hold the same bytes)."""
        if name in self._written:
            proto, digest = self._written[name]
            if array is not None and hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest() != digest:
                raise ValueError(f"the weight {name!r} was written with other values")
            copy = onnx.TensorProto()
            copy.CopyFrom(proto)
            return copy
        if array is None:
            raise ValueError(f"the weight {name!r} has not been written yet")
        array = np.ascontiguousarray(array)
        padding = -self._offset % _ALIGN
        self._file.write(b"\0" * padding)
        self._offset += padding
        data = array.tobytes()
        self._file.write(data)
        proto = onnx.TensorProto()
        proto.name = name
        proto.data_type = helper.np_dtype_to_tensor_dtype(array.dtype)
        proto.dims.extend(array.shape)
        proto.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", self.path.name), ("offset", str(self._offset)), ("length", str(len(data)))):
            entry = proto.external_data.add()
            entry.key, entry.value = key, value
        self._offset += len(data)
        self._written[name] = (proto, hashlib.sha256(data).hexdigest())
        return proto

    def close(self) -> None:
        self._file.close()


def external_files(path: Path) -> list[str]:
    """The external data files a graph file refers to (relative names), without reading them."""
    model = onnx.load(str(path), load_external_data=False)
    found = []
    for t in model.graph.initializer:
        if uses_external_data(t):
            loc = next(e.value for e in t.external_data if e.key == "location")
            if loc not in found:
                found.append(loc)
    return found
