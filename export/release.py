"""Give memory back to the OS between export phases (Linux; elsewhere these do nothing).

Two kinds of memory outlive what the export still needs:

    mapped pages   an fp16 checkpoint loaded as fp16 is a set of views into its memory-mapped
                   safetensors file: the pages of a part already exported and dropped (the
                   vision tower, the embedding table) stay in the process's RSS until the last
                   tensor of the file is freed (with the decoder, at the very end)
                   -> madvise(MADV_DONTNEED) on the pages of the mapping that no tensor of the
                      model still covers (they are never written: a later read would only refault
                      them from the file)
    freed heap     glibc keeps freed blocks in its arenas: a phase's transients stay resident
                   -> malloc_trim(0)

On the ``1b`` checkpoint the first is the vision tower and the embedding table, ~0.7 GB of the
2.82 GB that stayed resident through every decoder phase.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import mmap
import os
from pathlib import Path

_MADV_DONTNEED = 4


def _libc():
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        return ctypes.CDLL(name, use_errno=True)
    except OSError:
        return None


def trim_heap() -> bool:
    """glibc's malloc_trim(0): return the arenas' free memory to the OS; False where there is none."""
    gc.collect()
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None) if libc else None
    if trim is None:
        return False
    trim(ctypes.c_size_t(0))
    return True


def _file_mappings(files: set[str]) -> list[tuple[int, int]]:
    """[(start, end)] of this process's mappings of ``files`` (resolved paths)."""
    found = []
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and os.path.realpath(parts[5]) in files:
            start, end = (int(x, 16) for x in parts[0].split("-"))
            found.append((start, end))
    return found


def drop_unused_pages(model, weight_files) -> int:
    """Drop from RSS the pages of ``weight_files``' mappings that no tensor of ``model`` covers; returns bytes."""
    import torch

    files = {os.path.realpath(f) for f in weight_files}
    mappings = _file_mappings(files)
    libc = _libc()
    if not mappings or libc is None:
        return 0
    gc.collect()
    live = []        # [(start, end)]: the bytes each tensor the model still holds spans
    for t in (*model.parameters(), *model.buffers()):
        if isinstance(t, torch.Tensor) and t.device.type == "cpu" and t.numel():
            extent = sum((n - 1) * abs(s) for n, s in zip(t.shape, t.stride())) + 1
            live.append((t.data_ptr(), t.data_ptr() + extent * t.element_size()))
    live.sort()
    page = mmap.PAGESIZE
    dropped = 0
    for start, end in mappings:
        cursor = start
        for lo, hi in [iv for iv in live if iv[1] > start and iv[0] < end] + [(end, end)]:
            first = -(-cursor // page) * page              # whole pages only, inside the gap [cursor, lo)
            last = (min(lo, end) // page) * page
            if last > first:
                if libc.madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), _MADV_DONTNEED) == 0:
                    dropped += last - first
            cursor = max(cursor, hi)
    return dropped
