"""Weights written straight into ``<graph>.onnx_data``, one tensor at a time, page-aligned.

    array --append (4096-aligned)--> decoder_fused_fp32.onnx_data
      `--> TensorProto {location, offset, length}    (no bytes in the .onnx itself)

So building a graph never holds more than one weight beside the checkpoint, and ONNX Runtime
can memory-map the file.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper

_ALIGN = 4096


class ExternalWeights:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._file = open(self.path, "wb")
        self._offset = 0

    def tensor(self, name: str, array: np.ndarray) -> onnx.TensorProto:
        """Append ``array`` and return an initializer that points at it."""
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
        return proto

    def close(self) -> None:
        self._file.close()
