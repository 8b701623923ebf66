"""The decode roofline: this machine's memory bandwidth and the bytes a decode step must read.

A greedy decode step of a dense decoder reads every weight of ``decoder.onnx`` once
(the KV cache is small next to them), so ``weight_bytes / bandwidth`` is the fastest a
token can come on this machine; ``roofline_fraction = that / measured seconds per token``.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

GiB = 1 << 30


def memory_bandwidth(size_bytes: int = GiB, tries: int = 5, threads: int = 1) -> dict:
    """Best-of-``tries`` copy bandwidth in bytes/s of a ``size_bytes`` float64 array, read + write counted.

    With ``threads`` > 1 each thread copies its own slice (numpy releases the GIL for plain copies).
    """
    n = size_bytes // 8
    src = np.ones(n, dtype=np.float64)       # touched: pages are really allocated
    dst = np.zeros(n, dtype=np.float64)
    bounds = np.linspace(0, n, threads + 1, dtype=np.int64)

    def copy(i):
        np.copyto(dst[bounds[i]: bounds[i + 1]], src[bounds[i]: bounds[i + 1]])

    best = float("inf")
    for _ in range(tries):
        t0 = time.perf_counter()
        if threads == 1:
            np.copyto(dst, src)
        else:
            workers = [threading.Thread(target=copy, args=(i,)) for i in range(threads)]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
        best = min(best, time.perf_counter() - t0)
    del src, dst
    return {"bytes_per_s": 2 * n * 8 / best, "array_bytes": n * 8, "best_copy_s": best, "tries": tries,
            "threads": threads}


def read_bandwidth(size_bytes: int = GiB, tries: int = 5, threads: int = 1) -> dict:
    """Best-of-``tries`` read-only bandwidth in bytes/s: ``max()`` over a ``size_bytes`` float32 array.

    A decode step mostly reads (weights); a copy also pays for the writes.  With ``threads`` > 1
    each thread reduces its own slice (numpy releases the GIL).
    """
    n = size_bytes // 4
    a = np.ones(n, dtype=np.float32)
    bounds = np.linspace(0, n, threads + 1, dtype=np.int64)

    def read(i):
        a[bounds[i]: bounds[i + 1]].max()

    best = float("inf")
    for _ in range(tries):
        t0 = time.perf_counter()
        if threads == 1:
            a.max()
        else:
            workers = [threading.Thread(target=read, args=(i,)) for i in range(threads)]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
        best = min(best, time.perf_counter() - t0)
    del a
    return {"bytes_per_s": n * 4 / best, "array_bytes": n * 4, "best_read_s": best, "tries": tries,
            "threads": threads}


def weight_bytes(onnx_path: str | Path) -> dict:
    """Sum of the initializer sizes of a graph, external data included (read from the shapes, not loaded)."""
    import onnx                        # optional: onnx (the export extra)
    from onnx import helper

    model = onnx.load(str(onnx_path), load_external_data=False)
    total = external = 0
    count = 0
    for init in model.graph.initializer:
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(init.data_type)).itemsize
        size = int(np.prod(init.dims, dtype=np.int64)) * itemsize
        total += size
        count += 1
        if init.data_location == onnx.TensorProto.EXTERNAL:
            external += size
    return {"bytes": total, "external_bytes": external, "initializers": count}


def bundle_weight_bytes(folder: Path, graphs: dict[str, str]) -> dict:
    """weight_bytes of each graph of a bundle, and their total."""
    per = {name: weight_bytes(Path(folder) / file)["bytes"] for name, file in graphs.items()}
    return {"per_graph": per, "total": sum(per.values())}


def disk_bytes(folder: Path) -> int:
    """Bytes on disk of a bundle's files (symlinks followed: what a copy of the bundle weighs)."""
    return sum(p.stat().st_size for p in Path(folder).iterdir() if p.is_file())


def fraction(weight_bytes_: int, bandwidth_bytes_per_s: float, seconds_per_token: float | None) -> float | None:
    """Achieved fraction of the roofline: (weight_bytes / bandwidth) / measured seconds per token."""
    if not seconds_per_token:
        return None
    return (weight_bytes_ / bandwidth_bytes_per_s) / seconds_per_token
