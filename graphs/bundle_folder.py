"""Where a bundle is written: the target check and the atomic rename, shared by export and quantize.

    .<out>.partial-<pid>/   everything is written here first
         |  rename (the old <out>, if any, moved aside first and removed after)
         v
    <out>/                  never half-written

Pure Python (no torch), like the rest of ``graphs/``; each caller raises its own error type.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from .manifest import MANIFEST_FILE


def occupied(out: Path, force: bool) -> str | None:
    """Why ``out`` cannot take a new bundle (None: it can)."""
    if not out.exists() or force:
        return None
    if (out / MANIFEST_FILE).exists():
        return f"{out} already holds a bundle; pass --force to replace it"
    if not out.is_dir() or any(out.iterdir()):
        return f"{out} exists and is not an empty folder; pass --force to replace it"
    return None


def replace_folder(partial: Path, out: Path) -> None:
    """Rename the finished ``partial`` folder to ``out``, replacing what was there."""
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(old)
        partial.rename(out)
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    else:
        partial.rename(out)
